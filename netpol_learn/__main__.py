from netpol_learn._cli import main

main(prog_name="netpol-learn")
