#!/usr/bin/env bash
# Fills deploy/containers/wheelhouse/ with a wheel for every pin of requirements.lock, on the host, where
# pip reaches PyPI and the local indexes (torch comes from one: `pip config list`). The image builds
# install from it with --no-index, so a build downloads nothing twice and installs exactly the lock's
# pins. Idempotent: nothing runs when the stamp shows the lock it was filled from; else pip skips the
# wheels already there. Writes wheelhouse/runtime.txt, the runtime's pins (runtime_pins.py).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WHEELS="$HERE/wheelhouse"
PYTHON="${PYTHON:-python3.11}"
mkdir -p "$WHEELS"
stamp="$WHEELS/.lock.sha256"
want=$(sha256sum "$REPO/requirements.lock" | cut -d' ' -f1)
if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then exit 0; fi
# `pip wheel` downloads a wheel where one exists and builds one from an sdist where none does (the
# lock is complete: --no-deps). pip's notes about the local indexes' missing folders are left out.
"$PYTHON" -m pip wheel --quiet --no-deps -r "$REPO/requirements.lock" -w "$WHEELS" 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
# A wheel of a version no longer pinned would be installed beside the pinned one: keep the lock's only.
"$PYTHON" - "$REPO/requirements.lock" "$WHEELS" <<'PY'
import re, sys
from pathlib import Path
from packaging.utils import canonicalize_name, parse_wheel_filename
pins = {}
for line in Path(sys.argv[1]).read_text().splitlines():
    if m := re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip()):
        pins[canonicalize_name(m[1])] = m[2]
for wheel in Path(sys.argv[2]).glob("*.whl"):
    name, version, *_ = parse_wheel_filename(wheel.name)
    if pins.get(name) != str(version).split("+")[0] and pins.get(name) != str(version):
        wheel.unlink()
missing = set(pins) - {parse_wheel_filename(w.name)[0] for w in Path(sys.argv[2]).glob("*.whl")}
if missing:
    sys.exit(f"wheelhouse.sh: no wheel for {sorted(missing)}")
PY
# The runtime's pins (the images leave the test tools out).
"$PYTHON" "$HERE/runtime_pins.py" "$REPO/requirements.lock" "$REPO/pyproject.toml" "$WHEELS" > "$WHEELS/runtime.txt"
echo "$want" > "$stamp"
