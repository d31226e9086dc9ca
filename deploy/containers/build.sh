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

step wheelhouse "$HERE/wheelhouse.sh"
step deps $DOCKER build -q -f "$HERE/Dockerfile.deps" -t popularity-deps:$TAG "$HERE/wheelhouse" >/dev/null
step worker $DOCKER build -q -f "$REPO/deploy/Dockerfile.worker" --build-arg DEPS=popularity-deps:$TAG \
  -t popularity-worker:$TAG "$REPO" >/dev/null
step postgres $DOCKER build -q -f "$HERE/Dockerfile.postgres" -t popularity-postgres:15 "$HERE" >/dev/null
step bento-base $DOCKER build -q -f "$HERE/Dockerfile.bento-base" --build-arg "UV=$(grep -m1 '^uv==' "$REPO/requirements.lock")" \
  -t popularity-bento-base:$TAG "$HERE/wheelhouse" >/dev/null
