"""``bentoml serve`` with its process manager's control channel closed to other local users, and its
Prometheus files its own.

BentoML runs its workers under circus, whose arbiter takes commands (``add --start``: run any command
as the service's user) on a ZeroMQ endpoint that BentoML puts on a loopback TCP port, without
authentication: any local user could connect. Here the arbiter's command and pub/sub endpoints are
Unix sockets in a folder only the service's user may enter (``mkdtemp``: mode 0700), removed at exit.
BentoML's Prometheus multiprocess folder is by default one per BentoML home, emptied by every ``bentoml serve``
that starts there: a second service on the same home (a replica, a Bento tried beside the service) would
delete the first one's counters, whose ``/metrics`` then stops counting. Here it is a folder of that
private one, so each launch counts on its own and its files go when it ends.
Run as a file, ``python serving/launch.py <bentoml serve arguments>`` (ops starts the service so):
it imports no ``serving`` module, so a built Bento's service is imported from the Bento, not this checkout.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # run as a file: the modules beside it (service.py, metrics.py, …) are not top-level ones


def private_arbiters(folder: Path) -> None:
    """Make every circus arbiter that BentoML creates from now on listen on Unix sockets in ``folder``."""
    from bentoml._internal.utils import circus

    def create_standalone_arbiter(watchers: list, *, threaded: bool = False, **kwargs: Any):
        arbiter = circus.ThreadedArbiter if threaded else circus.Arbiter
        return arbiter(watchers, endpoint=f"ipc://{folder / 'control'}", pubsub_endpoint=f"ipc://{folder / 'pubsub'}",
                       check_delay=kwargs.pop("check_delay", 10), **kwargs)  # BentoML's own check_delay

    circus.create_standalone_arbiter = create_standalone_arbiter  # BentoML imports it at each call


# glibc's allocator in the service's processes (the workers inherit it; a value set outside wins): two
# arenas rather than eight per core, so the pages that decoding threads free are not spread over heaps
# that keep them (with serving.uploads.release_freed_memory after each decode, memory returns after a burst).
MALLOC_ENV = {"MALLOC_ARENA_MAX": "2"}


def main(argv: list[str]) -> int:
    folder = Path(tempfile.mkdtemp(prefix="popularity-circus-"))  # 0700: no other user reaches its sockets
    for name, value in MALLOC_ENV.items():
        os.environ.setdefault(name, value)
    try:
        private_arbiters(folder)
        from bentoml._internal.configuration.containers import BentoMLContainer

        BentoMLContainer.prometheus_multiproc_dir.set(str(folder / "prometheus"))
        from bentoml_cli.cli import cli

        return cli.main(["serve", *argv], prog_name="bentoml", standalone_mode=True) or 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
