"""The pins of requirements.lock that the runtime needs: pyproject's dependencies (and its ``weights``
extra) and everything they require, read from the wheels' own metadata. The lock also pins the test
tools (pytest, selenium, schemathesis, ...); the images leave those out.

    python runtime_pins.py requirements.lock pyproject.toml WHEELHOUSE > WHEELHOUSE/runtime.txt

Prints the kept pins as ``name==version`` lines; the left-out names go to stderr.
"""

from __future__ import annotations

import re
import sys
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

RUNTIME_EXTRAS = ("weights",)
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
    wanted: dict[str, set[str]] = {}  # package -> extras asked of it
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name not in pinned:
            continue  # an optional platform dependency the lock does not pin (not installed in the venv)
        extras = set(req.extras)
        if name in wanted and extras <= wanted[name]:
            continue
        wanted[name] = wanted.get(name, set()) | extras
        for dep in requirements(wheels[name]):
            if dep.marker is None or any(dep.marker.evaluate({"extra": extra}) for extra in ("", *wanted[name])):
                todo.append(dep)
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
