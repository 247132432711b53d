"""Import paths that the README's Python API promised before edgex's modules moved into packages by domain: each
old name imports the module that now holds the code (the same module object), with a DeprecationWarning."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "edgex.export": "edgex.artifacts.convert",
    "edgex.quantize": "edgex.optimize.quantize",
    "edgex.prune": "edgex.optimize.prune",
    "edgex.sweep": "edgex.sepconv.sweep",
    "edgex.compare": "edgex.sepconv.compare",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec):
        warnings.warn(f"{self.old} moved to {self.new}", DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new)

    def exec_module(self, module) -> None:
        """The module is the new one, already executed."""


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, _Alias(name, MOVED[name]))


def install() -> None:
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
