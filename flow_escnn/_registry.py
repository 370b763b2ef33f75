"""Registries of kinds that are one file each (flow kinds, cell kinds): found, imported, checked.

A kind package (:mod:`flow_escnn.flows.kinds`, :mod:`flow_escnn.nn.cell_kinds`) holds one module
per kind, each ending with ``KIND = <record>``; :func:`discover` imports them in name order and
returns the records by name, so adding a kind is adding its file.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Collection, Dict, Iterable

__all__ = ["discover"]


def discover(package: str, path: Iterable[str], record_type: type, skip: Collection[str] = ()) -> Dict[str, Any]:
    """``{record.name: record}`` of the ``KIND`` records of the modules of ``package``.

    Args:
        package: the package's dotted name (its ``__name__``).
        path: the package's ``__path__``.
        record_type: the class every ``KIND`` must be an instance of.
        skip: module names that are not kinds (the base classes).

    Raises:
        TypeError: a module without a ``KIND`` of ``record_type``.
        ValueError: two modules defining the same name.
    """
    kinds: Dict[str, Any] = {}
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if info.name in skip:
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        kind = getattr(module, "KIND", None)
        if not isinstance(kind, record_type):
            raise TypeError(f"{module.__name__} defines no KIND = {record_type.__name__}(...): every module of "
                            f"{package} is one kind")
        if kind.name in kinds:
            raise ValueError(f"kind {kind.name!r} is defined twice ({module.__name__})")
        kinds[kind.name] = kind
    return kinds
