#!/usr/bin/env bash
# Fills deploy/containers/wheelhouse/ with a wheel for every pin of requirements.lock, on the host, where
# pip reaches PyPI and the local indexes (torch comes from one: `pip config list`). The image builds
# install from it with --no-index, so a build downloads nothing twice and installs exactly the lock's
# pins. Idempotent: nothing runs when the stamp shows the lock it was filled from; else only the pins
# without a wheel there are fetched, and wheels of versions no longer pinned are removed. Writes
# wheelhouse/runtime.txt, the runtime's pins (runtime_pins.py: no test tools).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WHEELS="$HERE/wheelhouse"
PYTHON="${PYTHON:-python3.11}"
mkdir -p "$WHEELS"
stamp="$WHEELS/.lock.sha256"
want=$(sha256sum "$REPO/requirements.lock" "$HERE/runtime_pins.py" | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then exit 0; fi
# The lock's pins without a wheel here (and, with --prune, the wheels no pin names).
sync() {
  "$PYTHON" - "$REPO/requirements.lock" "$WHEELS" "$@" <<'PY'
import re, sys
from pathlib import Path
from packaging.utils import canonicalize_name, parse_wheel_filename
lock, wheels, prune = Path(sys.argv[1]), Path(sys.argv[2]), "--prune" in sys.argv
pins = {}
for line in lock.read_text().splitlines():
    if m := re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip()):
        pins[canonicalize_name(m[1])] = (m[1], m[2])
have = set()
for wheel in wheels.glob("*.whl"):
    name, version, *_ = parse_wheel_filename(wheel.name)
    if name in pins and pins[name][1] in {str(version), str(version).split("+")[0]}:
        have.add(name)
    elif prune:
        wheel.unlink()
print("\n".join(f"{pins[n][0]}=={pins[n][1]}" for n in sorted(set(pins) - have)))
PY
}
missing=$(sync)
if [[ -n "$missing" ]]; then
  # `pip wheel` downloads a wheel where one exists and builds one from an sdist where none does (the
  # lock is complete: --no-deps). pip's notes about the local indexes' missing folders are left out.
  "$PYTHON" -m pip wheel --quiet --no-deps -w "$WHEELS" -r /dev/stdin <<<"$missing" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
fi
left=$(sync --prune)
[[ -z "$left" ]] || { echo "wheelhouse.sh: no wheel for: $left" >&2; exit 1; }
"$PYTHON" "$HERE/runtime_pins.py" "$REPO/requirements.lock" "$REPO/pyproject.toml" "$WHEELS" > "$WHEELS/runtime.txt"
echo "$want" > "$stamp"
