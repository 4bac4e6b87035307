"""``dynvae datasets``: list the built-in datasets and whether they can be loaded here."""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
from pathlib import Path

from dynvae.data import DATASETS


def add_parser(sub) -> None:
    p = sub.add_parser("datasets", help="list built-in datasets",
                       description="List the built-in datasets: name, description, the "
                       "pip extra they need and whether its packages are installed.")
    p.set_defaults(run=run)


def extra_requirements(extra: str) -> list[str] | None:
    """Distribution names of ``dynvae[extra]`` (None if they cannot be determined)."""
    try:
        lines = metadata.requires("dynvae") or []
        return [re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0] for r in lines
                if re.search(rf"extra\s*==\s*['\"]{re.escape(extra)}['\"]", r)]
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
        try:
            import tomllib
            table = tomllib.loads(pyproject.read_text())
        except (ImportError, OSError, ValueError):
            return None
        reqs = table.get("project", {}).get("optional-dependencies", {}).get(extra)
        return None if reqs is None else [re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0]
                                          for r in reqs]


def installed(extra: str | None) -> str:
    if extra is None:
        return "yes"
    names = extra_requirements(extra)
    if names is None:
        return "unknown"
    for name in names:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            return "no"
    return "yes"


def run(args: argparse.Namespace) -> int:
    rows = [(info.name, info.description, info.extra or "-", installed(info.extra))
            for info in DATASETS.values()]
    header = ("name", "description", "extra", "installed")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0
