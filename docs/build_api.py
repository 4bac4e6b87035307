"""Build the API reference of dynvae from its docstrings with pdoc.

    python docs/build_api.py [OUT]         # default OUT: docs/api (not kept in git)

Every module of the package gets a page. The lazily imported names of ``dynvae`` and
``dynvae.data`` are resolved first, so pdoc sees them.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def module_names() -> list[str]:
    """dynvae and every public module below it."""
    package = importlib.import_module("dynvae")
    names = ["dynvae"]
    for info in pkgutil.walk_packages(package.__path__, prefix="dynvae."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def specs(names: list[str]) -> list[str]:
    """The module specs to give pdoc. Every module's parent package is documented too,
    and pdoc adds a package's submodules itself when the package has no ``__all__`` or
    names them in it; naming those again would document them twice."""
    def added_by_pdoc(name: str) -> bool:
        parent, _, child = name.rpartition(".")
        if not parent:
            return False
        listed = getattr(importlib.import_module(parent), "__all__", None)
        return listed is None or child in listed
    return [n for n in names if not added_by_pdoc(n)]


def build(out: Path) -> list[str]:
    """Render every module to ``out``; returns the module names."""
    import pdoc
    import pdoc.render
    for lazy in ("dynvae", "dynvae.data"):
        module = importlib.import_module(lazy)
        for name in module.__all__:
            getattr(module, name)
    names = module_names()
    pdoc.render.configure(docformat="google")
    pdoc.pdoc(*specs(names), output_directory=out)
    return names


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "api"
    print(f"{len(build(target))} modules documented in {target}")
