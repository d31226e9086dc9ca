#!/usr/bin/env bash
# Builds the team stack's images from Debian packages and the lock, with no registry:
#   local/debian:bookworm, local/python:3.11-bookworm   base.sh (debootstrap → docker import)
#   popularity-deps:0.1.0      the lock's runtime pins from the wheelhouse (Dockerfile.deps)
#   popularity-worker:0.1.0    the project on it (deploy/Dockerfile.worker): MLflow, Prefect, worker, service
#   popularity-postgres:15     PostgreSQL from Debian's postgresql-15 (Dockerfile.postgres)
#   popularity-bento-base:0.1.0  local/python + the lock's uv: the Bento's base (Dockerfile.bento-base)
# Idempotent and cached: an unchanged lock rebuilds nothing but the project's code layer.
# Prints each step's seconds on stderr (bench/bench_containers.py reads them).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
base_env=$("$HERE/base.sh")   # exits here when base.sh fails
eval "$base_env"
export DOCKER_BUILDKIT=1
TAG=0.1.0

step() {  # step NAME COMMAND...: runs it, prints its time
  local start=$SECONDS; "${@:2}"; echo "build.sh: $1 $((SECONDS - start)) s" >&2
}

# Room on the daemon's disk before gigabytes are written: a cold build and the stack's first run wrote
# about 15 GB there (the wheelhouse's copy as build context, the locked runtime's layer, the volumes;
# measured 2026-12-06), a rebuild on an existing popularity-deps a few. When less is free, what earlier
# builds left is reclaimed first (dangling images, build cache); if still short, the build stops here
# with the figures, not half-way with pip's "No space left on device". POPULARITY_BUILD_ROOM_GB sets it.
room() {
  local root free need=${POPULARITY_BUILD_ROOM_GB:-}
  [[ -n $need ]] || need=$($DOCKER image inspect popularity-deps:$TAG >/dev/null 2>&1 && echo 4 || echo 20)
  root=$($DOCKER info --format '{{.DockerRootDir}}')
  free=$(df -BG --output=avail "$root" | tail -1 | tr -dc 0-9)
  if (( free >= need )); then return; fi
  echo "build.sh: ${free} GB free under $root, this build needs about ${need} GB: reclaiming earlier builds' leftovers" >&2
  $DOCKER image prune -f >/dev/null
  $DOCKER builder prune -af >/dev/null
  free=$(df -BG --output=avail "$root" | tail -1 | tr -dc 0-9)
  if (( free >= need )); then return; fi
  echo "build.sh: still only ${free} GB free under $root, this build needs about ${need} GB." >&2
  echo "build.sh: the daemon holds:" >&2; $DOCKER system df >&2
  exit 1
}

step room room
step wheelhouse "$HERE/wheelhouse.sh"
step deps $DOCKER build -q -f "$HERE/Dockerfile.deps" -t popularity-deps:$TAG "$HERE/wheelhouse" >/dev/null
step worker $DOCKER build -q -f "$REPO/deploy/Dockerfile.worker" --build-arg DEPS=popularity-deps:$TAG \
  -t popularity-worker:$TAG "$REPO" >/dev/null
step postgres $DOCKER build -q -f "$HERE/Dockerfile.postgres" -t popularity-postgres:15 "$HERE" >/dev/null
step bento-base $DOCKER build -q -f "$HERE/Dockerfile.bento-base" --build-arg "UV=$(grep -m1 '^uv==' "$REPO/requirements.lock")" \
  -t popularity-bento-base:$TAG "$HERE/wheelhouse" >/dev/null
