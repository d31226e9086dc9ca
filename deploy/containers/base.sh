#!/usr/bin/env bash
# Docker and the base images, from Debian packages when no registry is reachable. Idempotent: every
# step is skipped when its result is already there, so it is cheap to run before each build.
#   deploy/containers/base.sh            # as root: packages, dockerd (overlay2), local/debian, local/python
# Environment:
#   POPULARITY_DEBIAN_BASE  a registry image to start from instead of debootstrap (e.g. debian:bookworm-slim)
#   DEBIAN_MIRROR           the mirror debootstrap reads (default: the one apt uses here)
#   DOCKERD_LOG             where a dockerd this script starts logs (default /var/log/popularity-dockerd.log)
# Prints `export DOCKER=…` lines for the scripts that source it (build.sh, the container tests).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEBIAN_IMAGE=local/debian:bookworm
PYTHON_IMAGE=local/python:3.11-bookworm
# Debian's CLI (20.10): its built-in BuildKit works, where a Docker 28 CLI without buildx refuses it.
DOCKER=/usr/bin/docker
PIDFILE=/run/popularity-dockerd.pid

log() { echo "base.sh: $*" >&2; }

packages() {
  if [[ -x /usr/sbin/dockerd && -x $DOCKER && -x /usr/sbin/debootstrap ]] \
     && command -v docker-compose >/dev/null; then return; fi
  log "installing docker.io, docker-compose, debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null
}

daemon() {
  if $DOCKER info >/dev/null 2>&1; then return; fi
  log "starting dockerd (overlay2)"
  setsid /usr/sbin/dockerd --storage-driver=overlay2 --pidfile="$PIDFILE" \
    >>"${DOCKERD_LOG:-/var/log/popularity-dockerd.log}" 2>&1 < /dev/null &
  for _ in $(seq 120); do
    if $DOCKER info >/dev/null 2>&1; then return; fi
    sleep 0.5
  done
  log "dockerd did not answer within 60 s; its log:"; tail -20 "${DOCKERD_LOG:-/var/log/popularity-dockerd.log}" >&2
  exit 1
}

have_image() { $DOCKER image inspect "$1" >/dev/null 2>&1; }

mirror() {
  # The first deb.debian.org-style URI apt uses here (a deb822 .sources file or sources.list).
  if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(grep -h -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  [[ -z "$uri" ]] && uri=$(grep -h -E '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

debian_image() {
  if [[ -n "${POPULARITY_DEBIAN_BASE:-}" ]]; then
    have_image "$POPULARITY_DEBIAN_BASE" || $DOCKER pull "$POPULARITY_DEBIAN_BASE"
    $DOCKER tag "$POPULARITY_DEBIAN_BASE" "$DEBIAN_IMAGE"; return
  fi
  if have_image "$DEBIAN_IMAGE"; then return; fi
  local root; root=$(mktemp -d /var/tmp/popularity-rootfs.XXXXXX)
  log "debootstrap --variant=minbase bookworm from $(mirror)"
  debootstrap --variant=minbase bookworm "$root" "$(mirror)" >/dev/null
  # apt inside behaves as on the host: the same sources and options (no dates checked on a snapshot).
  mkdir -p "$root/etc/apt/sources.list.d" "$root/etc/apt/apt.conf.d"
  cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/" 2>/dev/null && rm -f "$root/etc/apt/sources.list" || true
  for conf in /etc/apt/apt.conf.d/99*; do [[ -f $conf ]] && cp "$conf" "$root/etc/apt/apt.conf.d/"; done
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | $DOCKER import -c 'CMD ["/bin/bash"]' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$root"
}

python_image() {
  if have_image "$PYTHON_IMAGE"; then return; fi
  # The host's extra CA certificates (a TLS-intercepting egress here), so that apt and pip inside reach
  # what the host reaches. An empty folder where there are none.
  local context; context=$(mktemp -d)
  mkdir -p "$context/ca"
  cp /usr/local/share/ca-certificates/*.crt "$context/ca/" 2>/dev/null || true
  cp "$HERE/Dockerfile.python" "$context/Dockerfile"
  log "building $PYTHON_IMAGE"
  DOCKER_BUILDKIT=1 $DOCKER build -q --build-arg BASE="$DEBIAN_IMAGE" -t "$PYTHON_IMAGE" "$context" >/dev/null
  rm -rf "$context"
}

timed() {  # timed NAME FUNCTION: runs it, reports its seconds (bench.py reads them)
  local start=$SECONDS; "$2"; echo "base.sh: $1 $((SECONDS - start)) s" >&2
}
timed packages packages
timed dockerd daemon
timed debian-base debian_image
timed python-base python_image
echo "export DOCKER=$DOCKER DOCKER_BUILDKIT=1"
