"""The request log keeps every record whole under concurrent writers from several processes and rotation."""

from __future__ import annotations

import multiprocessing as mp
import os

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


def test_a_torn_line_is_skipped_and_counted(tmp_path):
    log = RequestLog(tmp_path, 10**6, 2)
    log.append([{"seq": 0}])
    with open(log.path, "ab") as handle:
        handle.write(b'{"seq": 1, "sco\n[1, 2]\n\xff\xfe\n')  # a crash mid-record, a non-record, broken bytes
    log.append([{"seq": 2}])
    frame = log.read()
    assert list(frame["seq"]) == [0, 2] and log.skipped == 3
    log.path.unlink()
    log.read()
    assert log.skipped == 0


def test_short_writes_are_continued_until_the_record_is_whole(tmp_path, monkeypatch):
    write = os.write
    calls = []

    def short(fd, data):  # what a signal or a nearly full disk may do
        calls.append(len(data))
        return write(fd, bytes(data)[:7])

    monkeypatch.setattr(os, "write", short)
    log = RequestLog(tmp_path, 10**6, 2)
    log.append([{"seq": i, "pad": "x" * 30} for i in range(3)])
    monkeypatch.undo()
    assert len(calls) > 3
    assert list(log.read()["seq"]) == [0, 1, 2] and log.skipped == 0


def test_the_monitor_message_counts_skipped_lines(tmp_path, settings, monkeypatch):
    import pandas as pd

    from monitoring import monitor

    monkeypatch.setattr(monitor.registry, "champion_summary", lambda task, settings: {"version": 1})
    monkeypatch.setattr(monitor, "reference_profile", lambda champion: pd.DataFrame({"brightness": [0.5]}))
    log = RequestLog(settings.monitoring_dir / "requests", settings.drift.log_max_bytes, settings.drift.log_backups)
    log.append([{"version": 1, "brightness": 0.5}])
    with open(log.path, "ab") as handle:
        handle.write(b'{"version": 1, "bri')
    result, _, report = monitor.run("binary", settings)
    assert report is None and "1 torn or invalid request log lines skipped" in result.message


def test_lookup_finds_the_records_of_the_ids_across_rotations_parsing_only_their_lines(tmp_path):
    log = RequestLog(tmp_path, max_bytes=8_000, backups=5)
    odd = 'p"q\\\\r\\u00e9'  # quotes, backslashes and non-ASCII survive json.dumps' escaping
    records = [{"ts": float(i), "version": "1", "prediction_id": f"{i:032x}", "post_id": f"post-{i}"} for i in range(300)]
    records[7]["post_id"] = odd
    for k in range(0, 300, 50):
        log.append(records[k:k + 50])
    with open(log.path, "ab") as handle:
        handle.write(b'{"ts": 1.0, "prediction_id": "' + b"f" * 32 + b'", "post_id": "torn')  # a torn last line
    assert len(list(tmp_path.glob("requests.jsonl.*"))) >= 2
    found = log.lookup([f"{3:032x}", f"{299:032x}", "f" * 32], ["post-150", odd, "post-never"])
    assert sorted(found["prediction_id"]) == [f"{i:032x}" for i in (3, 7, 150, 299)]
    assert found.set_index("prediction_id").loc[f"{7:032x}", "post_id"] == odd
    assert found.columns.tolist() == ["ts", "prediction_id", "post_id"] and log.lookup([], []).empty
