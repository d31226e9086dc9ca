"""The request log keeps every record whole under concurrent writers from several processes and rotation."""

from __future__ import annotations

import multiprocessing as mp

from monitoring.request_log import RequestLog


def _write(directory, writer: int, batches: int, max_bytes: int, backups: int) -> None:
    log = RequestLog(directory, max_bytes, backups)
    for i in range(batches):
        log.append([{"writer": writer, "seq": i, "part": j, "pad": "x" * 40} for j in range(3)])


def test_concurrent_writers_from_several_processes_lose_and_tear_nothing(tmp_path):
    writers, batches = 4, 150
    context = mp.get_context("spawn")
    processes = [context.Process(target=_write, args=(tmp_path, w, batches, 10**9, 3)) for w in range(writers)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
        assert p.exitcode == 0
    frame = RequestLog(tmp_path, 10**9, 3).read()
    assert len(frame) == writers * batches * 3
    assert not frame.duplicated(["writer", "seq", "part"]).any()
    # A batch is appended under one lock, so its records stay adjacent.
    for (_, _), group in frame.groupby(["writer", "seq"]):
        assert list(group.index) == list(range(group.index[0], group.index[0] + 3))


def test_rotation_bounds_the_files_and_keeps_the_newest_records(tmp_path):
    log = RequestLog(tmp_path, max_bytes=2_000, backups=2)
    for i in range(300):
        log.append([{"seq": i, "score": 0.5}])
    files = sorted(p.name for p in tmp_path.glob("requests.jsonl*"))
    assert files == ["requests.jsonl", "requests.jsonl.1", "requests.jsonl.2"]
    assert all(p.stat().st_size <= 2_000 for p in tmp_path.glob("requests.jsonl*"))
    frame = log.read()
    assert frame["seq"].is_monotonic_increasing and frame["seq"].iloc[-1] == 299
    assert list(log.read(last=5)["seq"]) == [295, 296, 297, 298, 299]


def test_concurrent_writers_across_rotations_keep_every_line_whole(tmp_path):
    context = mp.get_context("spawn")
    processes = [context.Process(target=_write, args=(tmp_path, w, 100, 20_000, 50)) for w in range(3)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
        assert p.exitcode == 0
    frame = RequestLog(tmp_path, 20_000, 50).read()
    assert len(list(tmp_path.glob("requests.jsonl.*"))) >= 2
    assert len(frame) == 3 * 100 * 3
    assert not frame.duplicated(["writer", "seq", "part"]).any()


def test_an_empty_log_reads_as_an_empty_frame(tmp_path):
    assert RequestLog(tmp_path, 1000, 2).read(last=10).empty
