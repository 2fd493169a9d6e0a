"""Print the zooserve wheel's run-time dependencies from pyproject.toml, one requirement a line.

    python3.11 docker/wheel_requirements.py pyproject.toml [--without NAME ...] > requirements-wheel.txt

The images install these (with requirements.txt as constraints, so they get the tested versions)
in a layer of their own, before the wheel itself goes in with --no-deps: a change of the package
rebuilds only the wheel layer, a change of its dependency list rebuilds the dependencies. Standard
library only (tomllib, Python 3.11), so it runs on the bare base image.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def requirements(pyproject: Path, without: set[str] = frozenset()) -> list[str]:
    deps = tomllib.loads(pyproject.read_text("utf-8"))["project"]["dependencies"]
    skip = {_name(n) for n in without}
    unknown = skip - {_name(d) for d in deps}
    if unknown:
        raise SystemExit(f"--without {', '.join(sorted(unknown))}: not a dependency in {pyproject}")
    return [d for d in deps if _name(d) not in skip]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pyproject", type=Path)
    p.add_argument("--without", action="append", default=[], metavar="NAME", help="leave this one out")
    args = p.parse_args(argv)
    sys.stdout.write("".join(f"{r}\n" for r in requirements(args.pyproject, set(args.without))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
