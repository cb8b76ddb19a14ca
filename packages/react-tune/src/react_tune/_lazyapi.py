# Vendored from vendor/lazyapi.py by `nox -s vendor`. Do not edit this copy; edit the source.
"""A package's public API, imported on first use (react-index and react-tune).

`import react_index` must not import torch or faiss, so a package's top-level names are looked up lazily: the
package lists {public name: the submodule defining it} and calls `lazy_api(__name__, API)` at the end of its
`__init__.py`. Where a submodule and a public function share a name (react_index.embed, react_tune.train),
importing the submodule would make Python set the package attribute to the module; here the public name stays
the function (the module is `sys.modules["pkg.name"]`, or `from pkg.name import ...`).
"""

from __future__ import annotations

import sys
import types
from importlib import import_module


def lazy_api(package: str, api: dict[str, str]) -> None:
    """Make the names in `api` ({public name: defining submodule}) attributes of the module `package`, imported
    when first used."""
    module = sys.modules[package]

    class Package(types.ModuleType):
        def __getattr__(self, name: str):
            if name in api:
                value = getattr(import_module(f".{api[name]}", package), name)
                types.ModuleType.__setattr__(self, name, value)  # later lookups skip __getattr__
                return value
            raise AttributeError(f"module {package!r} has no attribute {name!r}")

        def __dir__(self):
            return sorted({*vars(self), *api})

        def __setattr__(self, name, value):
            if name in api and isinstance(value, types.ModuleType) and value.__name__ == f"{package}.{name}":
                return  # the submodule of the same name, set by the import system: keep the public function
            super().__setattr__(name, value)

    module.__class__ = Package
