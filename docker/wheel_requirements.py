"""The zooserve wheel's run-time dependencies from pyproject.toml, and their pins.

    python3.11 docker/wheel_requirements.py pyproject.toml [--without NAME ...]
        prints the requirements, one a line
    python3.11 docker/wheel_requirements.py pyproject.toml [--without NAME ...]
            --pins requirements.txt --out DIR
        writes DIR/requirements-wheel.txt and DIR/constraints.txt: the lines of requirements.txt
        that pin one of those requirements, nothing else

The images install these (constrained to the tested versions) in a layer of their own, before the
wheel itself goes in with --no-deps: a change of the package rebuilds only the wheel layer, and
the dependency layer is rebuilt only when the list or one of its pins changes (not for a new pin
of a test or benchmark tool). Standard library only (tomllib, Python 3.11), so it runs on the bare
base image.
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


def pins(requirements_txt: Path, names: set[str]) -> list[str]:
    """The `NAME==VERSION` lines of a requirements file (comments dropped) for these names."""
    out = []
    for line in requirements_txt.read_text("utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-") and _name(line) in names:
            out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pyproject", type=Path)
    p.add_argument("--without", action="append", default=[], metavar="NAME", help="leave this one out")
    p.add_argument("--pins", type=Path, metavar="REQUIREMENTS_TXT", help="write the matching pins too")
    p.add_argument("--out", type=Path, metavar="DIR", help="with --pins: where the two files go")
    args = p.parse_args(argv)
    reqs = requirements(args.pyproject, set(args.without))
    if args.pins is None:
        sys.stdout.write("".join(f"{r}\n" for r in reqs))
        return 0
    if args.out is None:
        p.error("--pins needs --out DIR")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "requirements-wheel.txt").write_text("".join(f"{r}\n" for r in reqs), "utf-8")
    pinned = pins(args.pins, {_name(r) for r in reqs})
    (args.out / "constraints.txt").write_text("".join(f"{c}\n" for c in pinned), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
