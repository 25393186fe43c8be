"""Estimate the scorer image's size without a container engine: the installed size of hiddenstate's runtime
dependency closure (read from this environment's package metadata, torch being the CPU build) plus the base image.

    python -m knative.containers.estimate_size [--base-mb 124]

The base figure is the uncompressed size of python:3.11-slim-bookworm as published (about 124 MB); the build also
deletes ``__pycache__`` and pip, which this estimate counts out too. Registries store layers compressed; expect
roughly 35-45 % of the uncompressed figure for a tree dominated by shared libraries.
"""

from __future__ import annotations

import argparse
import re
from importlib import metadata

ROOT = "hiddenstate"
LEFT_OUT = {"pip", "setuptools", "wheel"}


def closure(root: str = ROOT) -> set[str]:
    """Names of the distributions ``root`` needs at run time (no extras)."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = _canonical(todo.pop())
        if name in seen or name in LEFT_OUT:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for raw in dist.requires or []:
            requirement, _, marker = raw.partition(";")
            # Extras are not installed; other markers (python_version, sys_platform) are counted conservatively.
            if "extra" not in marker:
                todo.append(re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0))
    return seen


def installed_bytes(name: str) -> int:
    dist = metadata.distribution(name)
    total = 0
    for file in dist.files or []:
        if "__pycache__" in file.parts:
            continue
        path = file.locate()
        if path.is_file():
            total += path.stat().st_size
    return total


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-mb", type=float, default=124.0, help="uncompressed size of the base image, MB")
    parser.add_argument("--top", type=int, default=8, help="largest packages to list")
    args = parser.parse_args()
    sizes = {name: installed_bytes(name) for name in closure()}
    packages_mb = sum(sizes.values()) / 1e6
    print(f"{'package':<28}{'MB':>10}")
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{name:<28}{size / 1e6:>10.1f}")
    print(f"{len(sizes)} distributions: {packages_mb:.0f} MB; with the base image: {packages_mb + args.base_mb:.0f} MB")


if __name__ == "__main__":
    main()
