"""Paths as the library's readers take them."""

from __future__ import annotations

import os
from collections.abc import Iterable


def path_list(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> list:
    """``paths`` as a list; one path given as itself is a list of it, not (for a string) the
    paths of its characters: ``load_policies("/x")`` would read the whole file system from ``/``."""
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
