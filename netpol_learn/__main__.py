from netpol_learn.cli import main

main(prog_name="netpol-learn")
