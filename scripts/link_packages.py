"""Hard-link installed distributions, with everything they require, into another venv.

Usage: ``.venv/bin/python scripts/link_packages.py DEST_VENV DIST [DIST ...]``

The runtime venv (``make runtime``) needs torch and its CUDA libraries: the same 5.5 GB of
files the development venv already holds. Linking them instead of installing a second copy
halves the disk a fresh CI run needs (one run failed with "No space left on device" while pip
wrote that copy). pip then finds them installed at the locked versions and installs the rest
as usual, so a package that only the dev extras bring is still missing there.

Only files inside site-packages are linked (console scripts carry the source venv's
interpreter in their first line). Where a hard link is impossible (another file system), the
file is copied. Both venvs must run the same Python version.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(names: list[str], site: Path) -> list[metadata.Distribution]:
    """The named distributions and, transitively, what they require (extras not followed)."""
    installed = {
        canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions(path=[str(site)])
    }
    todo = [canonicalize_name(n) for n in names]
    seen: dict[str, metadata.Distribution] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in installed:
            raise SystemExit(f"{name} is not installed in {site}")
        dist = seen[name] = installed[name]
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return sorted(seen.values(), key=lambda d: d.metadata["Name"])


def link_distribution(dist: metadata.Distribution, src: Path, dest: Path) -> int:
    """Links one distribution's files from ``src`` into ``dest``; returns the bytes linked."""
    linked = 0
    for entry in dist.files or []:
        source = (src / entry).resolve()
        if not source.is_relative_to(src.resolve()) or not source.is_file():
            continue
        target = dest / source.relative_to(src.resolve())
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            continue
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
        linked += source.stat().st_size
    return linked


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    dest_venv, names = Path(argv[0]), argv[1:]
    src = Path(sysconfig.get_paths()["purelib"])
    relative = src.relative_to(sys.prefix)
    dest = dest_venv / relative
    if not dest.is_dir():
        raise SystemExit(f"{dest} is not a site-packages folder of the same Python version")
    present = {
        canonicalize_name(d.metadata["Name"]) for d in metadata.distributions(path=[str(dest)])
    }
    total = 0
    # One already there (setuptools, pip of the new venv) is left to pip, which replaces it
    # with the locked version: linking beside it would leave two versions' files mixed.
    dists = [d for d in closure(names, src) if canonicalize_name(d.metadata["Name"]) not in present]
    for dist in dists:
        total += link_distribution(dist, src, dest)
    print(f"linked {len(dists)} distributions ({total / 2**30:.2f} GiB) into {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
