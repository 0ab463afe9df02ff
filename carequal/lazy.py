"""Package faces whose names load on first use (PEP 562).

A package's ``__init__`` maps each public name to the module that defines it; :func:`lazy_attributes` gives it
the module-level ``__getattr__`` and ``__dir__`` that import that module when the name is first used and keep
the value in the package. Importing the package then costs nothing until a name is used, and ``dir()`` and tab
completion list every name all the same. :mod:`carequal` and :mod:`carequal.batch` use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module

__all__ = ["lazy_attributes"]


def lazy_attributes(namespace: dict, homes: Mapping[str, str]) -> tuple[Callable[[str], object],
                                                                        Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the module whose ``globals()`` is ``namespace``; ``homes`` maps each name
    to the module that defines it.

    Examples
    --------
    >>> space = {"__name__": "demo"}
    >>> space["__getattr__"], space["__dir__"] = lazy_attributes(space, {"sqrt": "math"})
    >>> space["__getattr__"]("sqrt")(9.0), "sqrt" in space, "sqrt" in space["__dir__"]()
    (3.0, True, True)
    >>> space["__getattr__"]("cbrt")
    Traceback (most recent call last):
    ...
    AttributeError: module 'demo' has no attribute 'cbrt'
    """
    package = namespace["__name__"]

    def __getattr__(name: str):
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(home), name)
        namespace[name] = value  # later uses find it without calling __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(homes))

    return __getattr__, __dir__
