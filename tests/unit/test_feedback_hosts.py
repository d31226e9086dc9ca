"""Feedback images across hosts: rows recorded with their images on the service's host (its own home) are
learned from by a retrain on the worker's (another home), because both share the store; the images
travel through it, checked against the hash that names them."""

from __future__ import annotations

import csv

import pandas as pd
import pytest
import sqlalchemy as sa

from monitoring import feedback
from pipelines.data.collect import collect
from pipelines.data.snapshots import content_id
from pipelines.data.sources import parse_spec
from pipelines.settings import Settings
from tests.helpers import photo
from tests.unit.test_feedback import _serve


@pytest.fixture
def hosts(tmp_path, postgres_database) -> tuple[Settings, Settings]:
    """The service's and the worker's settings: two homes, one store."""
    return tuple(Settings(home=tmp_path / name, mlflow_tracking_uri=f"sqlite:///{tmp_path / name / 'mlflow.db'}",
                          store={"url": postgres_database}) for name in ("service", "worker"))


def _outcomes_manifest(folder, ids: list[str]) -> list[bytes]:
    """A ``manifest:`` source of outcomes with their photos, as a team sends them back."""
    folder.mkdir(parents=True)
    images = [photo(k) for k in range(len(ids))]
    with (folder / "outcomes.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prediction_id", "image", "likes", "followers", "user_id"])
        for k, (prediction, data) in enumerate(zip(ids, images, strict=True)):
            (folder / f"p{k}.jpg").write_bytes(data)
            writer.writerow([prediction, f"p{k}.jpg", 10 * k + 1, 100, f"u{k % 3}"])
    return images


def _record_on(settings: Settings, source: str):
    rows, images, rejects = feedback.read_source(parse_spec(source, settings), settings, progress=False)
    return feedback.record(rows, settings, images, rejects, mode="ephemeral")


def test_a_retrain_on_another_host_learns_from_feedback_images_recorded_on_the_services(hosts, tmp_path):
    service, worker = hosts
    ids = _serve(service, 6)
    sent = _outcomes_manifest(tmp_path / "outcomes", ids)
    assert _record_on(service, f"manifest:{tmp_path / 'outcomes' / 'outcomes.csv'}").accepted == 6
    assert not worker.feedback_dir.exists()  # nothing of it on the worker's disk

    exported = feedback.export_manifest(worker)
    manifest = pd.read_json(exported, lines=True, dtype={"prediction_id": str})
    assert sorted(manifest["prediction_id"]) == sorted(ids)
    assert {(worker.feedback_dir / p).read_bytes() for p in manifest["image"]} == set(sent)

    # the retrain's collection reads it as it does (flows: collect_snapshot(..., also=[manifest:…]))
    snapshot = collect(parse_spec(f"manifest:{exported}", worker), worker, progress=False)
    assert sorted(snapshot.manifest["image_id"]) == sorted(content_id(data) for data in sent)
    assert sorted(snapshot.manifest["likes"]) == [1, 11, 21, 31, 41, 51]


def test_the_one_machine_path_keeps_images_in_the_home_alone(settings, tmp_path):
    ids = _serve(settings, 2)
    _outcomes_manifest(tmp_path / "outcomes", ids)
    assert _record_on(settings, f"manifest:{tmp_path / 'outcomes' / 'outcomes.csv'}").accepted == 2
    engine = sa.create_engine(f"sqlite:///{settings.monitoring_dir / 'state.db'}")
    assert not sa.inspect(engine).has_table("feedback_images") or not pd.read_sql("feedback_images", engine).shape[0]
    assert len(pd.read_json(feedback.export_manifest(settings), lines=True)) == 2


def test_an_image_whose_bytes_do_not_match_its_name_is_not_learned_from(hosts, tmp_path):
    service, worker = hosts
    ids = _serve(service, 3)
    _outcomes_manifest(tmp_path / "outcomes", ids)
    _record_on(service, f"manifest:{tmp_path / 'outcomes' / 'outcomes.csv'}")
    store = feedback.open_feedback_store(service)
    victim = sorted(store.images(list(feedback.latest(store.read())["image"])))[0]
    with store.engine.begin() as connection:  # the table altered behind the store's back
        connection.execute(feedback.images_table.update().where(feedback.images_table.c.image == victim)
                           .values(data=photo(9)))
    manifest = pd.read_json(feedback.export_manifest(worker), lines=True, dtype={"prediction_id": str})
    assert len(manifest) == 2 and victim not in set(manifest["image"])
    assert not (worker.feedback_dir / victim).exists()
