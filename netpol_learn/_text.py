"""Small wording helpers shared by the command line and the reports."""


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 flow``, ``2 flows``; ``plural`` where adding an s is wrong (``policies``)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
