"""Container build and start-up, measured on this machine: image build time cold (no images, no build
cache, an empty wheelhouse) and warm (nothing changed; and the code layer alone, as after a code edit),
image sizes, and `compose up` of deploy/compose.yaml until every service is healthy. Ratios are against
the cold build of the same run.

    python3 deploy/containers/bench.py            # cold: removes the stack's images, build cache, wheelhouse
    python3 deploy/containers/bench.py --warm     # keeps them: warm builds, sizes, compose up

Needs root (base.sh installs Docker and starts dockerd when missing). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DOCKER = "/usr/bin/docker"
IMAGES = ["local/debian:bookworm", "local/python:3.11-bookworm", "popularity-deps:0.1.0",
          "popularity-worker:0.1.0", "popularity-postgres:15"]


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, text=True, **kwargs)


def build() -> tuple[float, dict[str, int]]:
    """deploy/containers/build.sh: its wall time and the seconds of each step it reports."""
    start = time.monotonic()
    done = run([str(HERE / "build.sh")], capture_output=True, cwd=REPO)
    steps = {m[1]: int(m[2]) for m in re.finditer(r"^(?:build|base)\.sh: (\S+) (\d+) s$", done.stderr, re.MULTILINE)}
    return time.monotonic() - start, steps


def cold_start() -> None:
    run([str(HERE / "base.sh")], capture_output=True)  # the daemon, so that it can be emptied
    present = [i for i in IMAGES
               if subprocess.run([DOCKER, "image", "inspect", i], capture_output=True).returncode == 0]
    if present:
        run([DOCKER, "image", "rm", "-f", *present], capture_output=True)
    run([DOCKER, "builder", "prune", "-af"], capture_output=True)
    shutil.rmtree(HERE / "wheelhouse", ignore_errors=True)


def code_layer() -> float:
    """The project image's own steps rebuilt (what a code edit costs), on the cached deps image."""
    start = time.monotonic()
    run([DOCKER, "build", "-q", "--no-cache", "-f", "deploy/Dockerfile.worker", "-t", "popularity-worker:0.1.0", "."],
        cwd=REPO, capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    return time.monotonic() - start


def sizes() -> dict[str, float]:
    found = json.loads(run([DOCKER, "image", "inspect", *IMAGES], capture_output=True).stdout)
    return {tag: image["Size"] / 1e9 for image in found for tag in image["RepoTags"] if tag in IMAGES}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compose_up() -> float:
    """Seconds from `compose up -d` until every service is healthy; the project is removed after."""
    project = f"popularity-bench-{secrets.token_hex(4)}"
    env = {**os.environ, "POSTGRES_PASSWORD": secrets.token_hex(16), "POPULARITY_API_KEY": secrets.token_hex(16),
           "POPULARITY_INCOMING": tempfile.mkdtemp(prefix="popularity-bench-"),
           **{var: str(free_port()) for var in ("POPULARITY_MLFLOW_PORT", "POPULARITY_PREFECT_PORT",
                                                "POPULARITY_SERVICE_PORT", "POPULARITY_SCORE_PORT")}}
    compose = ["docker-compose", "-p", project, "-f", str(REPO / "deploy" / "compose.yaml")]
    start = time.monotonic()
    try:
        run([*compose, "up", "-d"], env=env, capture_output=True, cwd=REPO)
        while time.monotonic() - start < 900:
            ids = run([*compose, "ps", "-q"], env=env, capture_output=True).stdout.split()
            states = json.loads(run([DOCKER, "inspect", *ids], capture_output=True).stdout)
            health = [(s["State"].get("Health") or {}).get("Status") for s in states]
            if "unhealthy" in health:
                sys.exit(f"a service is unhealthy: {health}")
            if health and all(h == "healthy" for h in health):
                return time.monotonic() - start
            time.sleep(1)
        sys.exit("not healthy within 900 s")
    finally:
        subprocess.run([*compose, "down", "-v"], env=env, capture_output=True)
        shutil.rmtree(env["POPULARITY_INCOMING"], ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", action="store_true", help="keep images, build cache and wheelhouse (no cold build)")
    args = parser.parse_args()
    rows = []
    if not args.warm:
        cold_start()
        cold, steps = build()
        rows.append(("cold build (empty wheelhouse, no images, no cache)", cold, 1.0))
        rows += [(f"  of which {step}", seconds, seconds / cold) for step, seconds in steps.items()]
    warm, _ = build()
    base = rows[0][1] if rows else None
    rows.append(("warm build (nothing changed)", warm, warm / base if base else float("nan")))
    layer = code_layer()
    rows.append(("code layer rebuilt (a code edit)", layer, layer / base if base else float("nan")))
    up = compose_up()
    rows.append(("compose up until every service is healthy", up, up / base if base else float("nan")))
    print("| step | seconds | × cold build |\n|---|---|---|")
    for name, seconds, ratio in rows:
        print(f"| {name} | {seconds:.0f} | {ratio:.3f} |")
    print("\n| image | size (GB) |\n|---|---|")
    for tag, gb in sorted(sizes().items()):
        print(f"| {tag} | {gb:.2f} |")


if __name__ == "__main__":
    main()
