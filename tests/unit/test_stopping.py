"""Stopping the stack's processes: a leader that misses its first signal with nothing in progress is told
again instead of holding `stack down` for the whole grace period (a Prefect worker now and then misses a
SIGTERM that arrives while it starts or reports a run); one whose work is still running is left to finish it."""

from __future__ import annotations

import subprocess
import sys
import time

from ops import processes

def _deaf_once(second: str) -> str:
    """Code that ignores the first SIGTERM and runs ``second`` on the next, then says it is ready."""
    return f"""
import signal, sys
heard = []
def on_term(*_):
    heard.append(1)
    if len(heard) > 1:
        {second}
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
"""


FOREVER = """
import time
while True:
    time.sleep(0.05)
"""
# Misses the first SIGTERM, exits 0 on the second (as Prefect's worker reads a second signal).
DEAF_ONCE = _deaf_once("sys.exit(0)") + FOREVER

# Runs a child that ignores SIGTERM and finishes its work (a flow run); on SIGTERM the leader waits for it,
# then exits 0. A second SIGTERM while the child runs would end the leader with code 3.
FINISHES_ITS_RUN = """
import subprocess, sys
run = subprocess.Popen([sys.executable, "-c", '''
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("running", flush=True)
time.sleep(2.5)
open(sys.argv[1], "w").write("done")
''', sys.argv[1]], stdout=subprocess.PIPE)
run.stdout.readline()
""" + _deaf_once("sys.exit(3)") + """
import time
while not heard:
    time.sleep(0.05)
run.wait()
sys.exit(0)
"""


def _leader(code: str, *args: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    assert process.stdout.readline().strip() == "ready"
    return process


def test_a_leader_that_missed_its_signal_with_nothing_running_is_told_again(monkeypatch):
    monkeypatch.setattr(processes, "AGAIN_S", 1.0)
    leader = _leader(DEAF_ONCE)
    started = time.monotonic()
    processes.stop_group(leader, grace_s=30)
    took = time.monotonic() - started
    assert leader.returncode == 0, "it was killed, not told again"
    assert 1.0 <= took < 10, took


def test_a_leader_finishing_a_run_is_left_to_finish_it(monkeypatch, tmp_path):
    monkeypatch.setattr(processes, "AGAIN_S", 1.0)
    marker = tmp_path / "run-finished"
    leader = _leader(FINISHES_ITS_RUN, str(marker))
    processes.stop_group(leader, grace_s=30)
    assert leader.returncode == 0, "it was told to stop now while its run was in progress"
    assert marker.read_text() == "done"


def test_a_leader_that_never_stops_is_killed_after_the_grace(monkeypatch):
    monkeypatch.setattr(processes, "AGAIN_S", 0.5)
    leader = _leader(_deaf_once("pass") + FOREVER)
    started = time.monotonic()
    processes.stop_group(leader, grace_s=2)
    assert leader.returncode == -9 and time.monotonic() - started < 10
