"""Collection end to end: batches, downloads, resumption, crash safety and a Dask cluster."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipelines.data import collect as collect_module
from pipelines.data.collect import batches, collect, prepare_batch
from pipelines.data.labels import LabelError
from pipelines.data.snapshots import Snapshot, SnapshotWriter
from pipelines.data.sources import Item, SpecError, parse_spec
from pipelines.settings import Settings
from tests.helpers import photo

ROOT = Path(__file__).resolve().parents[2]


def _url_manifest(tmp_path, server, n: int = 6, extra: tuple[str, ...] = ()) -> Path:
    rows = ["image,likes,user_id"] + [f"{server.url(f'/img/{k}.jpg')},{k * 3},u{k % 3}" for k in range(n)]
    path = tmp_path / "urls.csv"
    path.write_text("\n".join([*rows, *extra]) + "\n")
    return path


def test_demo_collection_is_deterministic_and_grouped(settings):
    first = collect(parse_spec("demo:40", settings), settings, progress=False)
    second = collect(parse_spec("demo:40", settings), settings, progress=False)
    assert first.path == second.path and len(first.manifest) + first.meta["counts"]["rejects"] == 40
    assert first.manifest.groupby("group")["split"].nunique().max() == 1
    assert (first.path / "oracle.parquet").exists() and first.meta["code_version"]
    assert [p.name for p in first.path.parent.iterdir()] == [first.id]


def test_url_items_are_downloaded_in_batches_and_a_failure_is_only_a_reject(tmp_path, http_server, fast_settings):
    fast_settings.download = fast_settings.download.model_copy(update={"batch_size": 2})
    path = _url_manifest(tmp_path, http_server, extra=(f"{http_server.url('/text')},1,u9",
                                                        f"{http_server.url('/flaky/40')},2,u9"))
    snap = collect(parse_spec(f"manifest:{path}", fast_settings), fast_settings, progress=False)
    assert len(snap.manifest) == 7 and snap.rejects["reason"].tolist() == ["not_an_image"]
    assert snap.meta["counts"]["reject_reasons"] == {"not_an_image": 1}
    assert all(snap.read_image(p)[:3] == b"\xff\xd8\xff" for p in snap.manifest["image_path"])


def test_an_interrupted_collection_resumes_from_the_download_cache(tmp_path, http_server, fast_settings, monkeypatch):
    fast_settings.download = fast_settings.download.model_copy(update={"batch_size": 3})
    path = _url_manifest(tmp_path, http_server, n=6)
    real, calls = collect_module.download_items, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second batch
        return real(*args, **kwargs)

    monkeypatch.setattr(collect_module, "download_items", interrupted)
    with pytest.raises(KeyboardInterrupt):
        collect(parse_spec(f"manifest:{path}", fast_settings), fast_settings, progress=False)
    assert sum(http_server.hits.values()) == 3
    assert not any((fast_settings.datasets_dir / "manifest").iterdir()), "the interrupted run left a folder"

    monkeypatch.setattr(collect_module, "download_items", real)
    snap = collect(parse_spec(f"manifest:{path}", fast_settings), fast_settings, progress=False)
    assert len(snap.manifest) == 6
    assert sum(http_server.hits.values()) == 6 and max(http_server.hits.values()) == 1, "a cached image was refetched"


def test_a_killed_collection_leaves_no_snapshot(tmp_path, settings):
    env = {**os.environ, "POPULARITY_HOME": str(settings.home), "PYTHONPATH": str(ROOT)}
    script = ("from pipelines.data.collect import collect; from pipelines.settings import get_settings; "
              "from pipelines.data.sources import parse_spec; "
              "settings = get_settings(); collect(parse_spec('demo:3000', settings), settings, progress=False)")
    child = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path)
    folder = settings.datasets_dir / "demo"
    deadline = time.monotonic() + 30
    # midway: wait (however loaded the machine) until the child has written images into its temporary folder
    while not any(folder.glob(".tmp-*/images/**/*.jpg")) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    assert child.poll() is None, "the collection finished before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    left = list(folder.iterdir())
    assert left and all(p.name.startswith(".tmp-") for p in left), left
    assert any((left[0] / "images").rglob("*.jpg")), "the child was killed before it wrote anything"
    with pytest.raises(FileNotFoundError):
        Snapshot.open(settings.datasets_dir)
    snap = collect(parse_spec("demo:20", settings), settings, progress=False)
    assert Snapshot.open(settings.datasets_dir).path == snap.path
    assert Snapshot.open(settings.datasets_dir, "demo").path == snap.path


def test_nothing_usable_writes_nothing(tmp_path, settings):
    (tmp_path / "popular").mkdir()
    (tmp_path / "unpopular").mkdir()
    (tmp_path / "popular" / "a.jpg").write_text("text")
    with pytest.raises(SpecError, match="no usable image"):
        collect(parse_spec(f"folders:{tmp_path}", settings), settings, progress=False)
    assert not any((settings.datasets_dir / "folders").iterdir())


def test_an_unknown_or_unfit_label_fails_before_anything_is_kept(tmp_path, settings):
    (tmp_path / "popular").mkdir()
    (tmp_path / "unpopular").mkdir()
    (tmp_path / "popular" / "a.jpg").write_bytes(photo(1))
    with pytest.raises(LabelError, match="unknown"):
        collect(parse_spec(f"folders:{tmp_path}", settings), settings, label="viral", progress=False)
    with pytest.raises(LabelError, match="favorites"):
        collect(parse_spec(f"folders:{tmp_path}", settings), settings, label="favorited", progress=False)
    assert not any((settings.datasets_dir / "folders").iterdir())


def test_prepared_batches_travel_between_processes(settings):
    source = parse_spec("demo:12", Settings())
    prepared = prepare_batch(next(batches(source.items(), 5)), settings, progress=False)
    assert all(isinstance(i, Item) and i.info.width == 128 for i in prepared)
    assert pickle.loads(pickle.dumps(prepared)) == prepared


def test_a_collection_on_a_dask_cluster_gives_the_serial_snapshot(tmp_path, http_server, fast_settings):
    """The flow's scale-out path: prepare_batch mapped over a LocalCluster, then collect(items=...)."""
    from distributed import Client, LocalCluster

    path = _url_manifest(tmp_path, http_server, n=8, extra=(f"{http_server.url('/missing')},1,u1",))
    source = parse_spec(f"manifest:{path}", Settings())
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        futures = client.map(prepare_batch, list(batches(source.items(), 3)), settings=fast_settings, progress=False)
        items = [item for batch in client.gather(futures) for item in batch]
    assert sum(http_server.hits.values()) == 9
    on_cluster = collect(source, fast_settings, items=items, name="cluster", progress=False)
    serial = collect(source, fast_settings, name="serial", progress=False)
    assert on_cluster.id == serial.id and len(serial.manifest) == 8
    assert sum(http_server.hits.values()) == 10, "the serial run should reuse the cache (only the 404 is asked again)"


def test_two_writers_committing_the_same_content_both_get_the_snapshot(settings, monkeypatch):
    manifest = pd.DataFrame({"image_id": ["a", "b"], "label": [0, 1], "split": ["train", "test"]})
    first, second = (SnapshotWriter(settings.datasets_dir, "race", 3600.0) for _ in range(2))
    rename = Path.rename
    committed = []

    def racing(self, target):  # the first writer commits between the second's check and its rename
        if self == second.tmp and not committed:
            committed.append(first.commit(manifest, {"source": {"kind": "x"}}))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", racing)
    snap = second.commit(manifest, {"source": {"kind": "x"}})
    assert committed and snap.path == committed[0].path and snap.meta["counts"]["items"] == 2
    assert [p.name for p in (settings.datasets_dir / "race").iterdir()] == [snap.id]


def test_a_new_writer_removes_the_temporary_folders_of_killed_writers(settings):
    parent = settings.datasets_dir / "demo"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folders = {}
    for name, owner, age_s in [("dead", {"host": socket.gethostname(), "pid": int(dead.stdout)}, 0),
                               ("old", None, 7200), ("fresh", None, 0), ("alive", {"host": socket.gethostname(),
                                                                                  "pid": os.getpid()}, 7200)]:
        folder = folders[name] = parent / f".tmp-{name}"
        (folder / "images").mkdir(parents=True)
        if owner:
            (folder / ".owner").write_text(json.dumps(owner))
        os.utime(folder, (time.time() - age_s, time.time() - age_s))
    writer = SnapshotWriter(settings.datasets_dir, "demo", 3600.0)
    assert sorted(p.name for p in parent.iterdir()) == sorted([".tmp-fresh", ".tmp-alive", writer.tmp.name])
    writer.abort()


def test_a_snapshot_is_written_under_datasets_whatever_name_it_is_given(settings):
    from pipelines.data.snapshots import SnapshotNameError

    for name in ("../../x", "../x", "a/../../b", "/abs", ".tmp-1"):
        with pytest.raises(SnapshotNameError):
            SnapshotWriter(settings.datasets_dir, name, 3600.0)
    assert not (settings.root / "x").exists() and not settings.root.parent.joinpath("x").exists()
    assert SnapshotWriter(settings.datasets_dir, "my-set_2.v1", 3600.0).parent == settings.datasets_dir / "my-set_2.v1"


def test_a_body_cut_short_at_a_lying_content_length_is_a_reject_and_not_kept_in_the_cache(tmp_path, http_server,
                                                                                          fast_settings):
    from pipelines.data.download import DownloadCache, cache_dir

    short = http_server.url("/short/3")
    path = _url_manifest(tmp_path, http_server, n=2, extra=(f"{short},1,u9",))
    snap = collect(parse_spec(f"manifest:{path}", fast_settings), fast_settings, progress=False)
    assert len(snap.manifest) == 2 and snap.rejects["reason"].tolist() == ["corrupt"]
    cache = DownloadCache(cache_dir(fast_settings))
    assert cache.get(short) is None and cache.get(http_server.url("/img/0.jpg")) is not None
    collect(parse_spec(f"manifest:{path}", fast_settings), fast_settings, progress=False)
    assert http_server.hits["/short/3"] == 2 and http_server.hits["/img/0.jpg"] == 1  # asked again, the rest cached
