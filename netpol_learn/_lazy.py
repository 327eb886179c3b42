"""Packages whose names are loaded on first use (PEP 562): ``netpol_learn`` itself,
``netpol_learn._capture`` and ``netpol_learn._sniff``. Each says where each of its names lives;
a command then loads only the modules it runs (``import netpol_learn`` and the command line start
without Jinja, PyYAML, numpy, the capture stage or the sniffer)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module


def on_first_use(namespace: dict, homes: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of the module whose ``globals()`` is ``namespace``:
    a name of ``homes`` is imported from its module when first asked for, and kept in
    ``namespace`` (the next lookup is a plain attribute)."""
    package = namespace["__name__"]

    def __getattr__(name: str):
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(home), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ())})

    return __getattr__, __dir__
