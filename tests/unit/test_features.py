"""Each feature on real photographs (scikit-image, matplotlib)."""

from __future__ import annotations

import matplotlib.cbook
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from pipelines.features import embeddings, faces
from pipelines.features.colors import dominant_colors, palette_features
from pipelines.features.featurizer import ImageFeaturizer
from pipelines.features.social import NAMES, social_features, social_inputs


@pytest.fixture(scope="module")
def photos(photographs) -> dict[str, Image.Image]:
    grace = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    return {name: Image.fromarray(a) for name, a in photographs.items()} | {"grace_hopper": grace}


def test_faces_found_on_portraits_and_not_on_a_cup(photos):
    table = faces.face_features([photos["astronaut"], photos["grace_hopper"], photos["coffee"]])
    assert table["face_count"].tolist() == [1, 1, 0]
    assert 0.01 < table.loc[0, "face_area"] < 0.2 and table.loc[2, "face_area"] == 0
    keep = faces.has_faces(table, min_confidence=2.0)
    assert keep.tolist() == [True, True, False]
    assert not faces.has_faces(table, min_confidence=1e6).any()  # the threshold is a real filter


def test_dominant_colours_of_a_photograph_match_its_pixels(photos):
    pixels = np.stack([np.asarray(ImageOps.fit(photos["coffee"], (64, 64)))])
    palette = dominant_colors(pixels, k=5)[0]
    assert palette.shape == (5, 4)
    assert palette[:, 3].sum() == pytest.approx(1.0) and np.all(np.diff(palette[:, 3]) <= 0)
    mean = pixels.reshape(-1, 3).mean(0)
    assert np.allclose((palette[:, :3] * palette[:, 3:]).sum(0), mean, atol=1.0)  # centroids average to the mean


def test_embeddings_are_penultimate_and_flip_invariant(photos):
    images = [photos["chelsea"], photos["astronaut"]]
    z = embeddings.embed(images, px=96)
    assert z.shape == (2, 1280) and np.isfinite(z).all()
    mirrored = embeddings.embed([ImageOps.mirror(img) for img in images], px=96)
    assert np.allclose(z, mirrored, atol=1e-3)
    plain = embeddings.embed(images, px=96, flip=False)
    assert not np.allclose(z, plain, atol=1e-3)
    cosine = (z[0] @ z[1]) / np.linalg.norm(z[0]) / np.linalg.norm(z[1])
    assert cosine < 0.95  # a cat and an astronaut are not the same picture


def test_social_features_from_a_manifest_and_with_nothing_known():
    manifest = pd.DataFrame({"followers": [0, 999], "account_age_days": [10, 20], "posts_per_week": [1.0, 2.0],
                             "tags": [3, 0], "posted_at": pd.to_datetime(["2026-01-01 23:00", "2026-01-02 00:30"])})
    table = social_features(social_inputs(manifest))
    assert list(table.columns) == NAMES
    assert table["log_followers"].tolist() == pytest.approx([0.0, np.log(1000)])
    assert np.hypot(table["hour_sin"][0] - table["hour_sin"][1], table["hour_cos"][0] - table["hour_cos"][1]) < 0.3
    assert table["tag_count"].tolist() == [3, 0]  # a number in tags is a tag count
    nothing = social_features(pd.DataFrame(index=range(2)))
    assert nothing.drop(columns="text").isna().all().all() and nothing["text"].tolist() == ["", ""]


def test_text_columns_become_words_and_a_tag_count():
    manifest = pd.DataFrame({"tags": ["Sunset|food", "city, art  night", None], "title": ["A day out", None, "x"],
                             "description": [None, None, None]})
    table = social_features(social_inputs(manifest))
    assert table["text"].tolist() == ["sunset food a day out", "city art night", "x"]
    assert table["tag_count"].tolist()[:2] == [2, 3] and np.isnan(table["tag_count"][2])


def test_featurizer_combines_groups(photos):
    images = [photos["coffee"], photos["astronaut"]]
    table = ImageFeaturizer(groups=("colors", "quality", "faces", "social")).transform(images)
    assert len(table) == 2 and {"color0_r", "sharpness", "face_count", "log_followers"} <= set(table.columns)


def test_drift_profile_projects_like_its_saved_copy_and_sees_greyscale(photos, tmp_path):
    from pipelines.features.monitored import SCALARS
    from pipelines.features.profile import Profiler

    images = list(photos.values())
    fitted = Profiler.fit(images, dims=3)
    loaded = Profiler.load(fitted.save(tmp_path / "profiler.json"))
    table = loaded.transform(images)
    assert list(table.columns) == [*SCALARS, "pc1", "pc2", "pc3"]
    pd.testing.assert_frame_equal(table, fitted.transform(images))  # the service projects as training did
    assert table.loc[list(photos).index("astronaut"), "face_count"] == 1
    grey = loaded.transform([img.convert("L").convert("RGB") for img in images])
    assert (grey["saturation"] < 0.01).all() and (table["saturation"] > 0.05).any()
    assert np.allclose(grey["dominant_r"], grey["dominant_g"], atol=1)
    assert np.allclose(grey["dominant_g"], grey["dominant_b"], atol=1)
    assert not np.allclose(grey[["pc1", "pc2", "pc3"]], table[["pc1", "pc2", "pc3"]], atol=0.1)


def test_seed_000s_palette_lean_is_the_unweighted_mean_minus_the_weighted_one():
    palettes = np.array([[[200, 0, 0, 0.75], [0, 0, 200, 0.25]]], dtype=float)  # mostly red, some blue
    values, names = palette_features(palettes)
    lean = dict(zip(names, values[0]))
    # unweighted mean (100, 0, 100) minus the share-weighted mean (150, 0, 50)
    assert (lean["unweighted_minus_mean_r"], lean["unweighted_minus_mean_g"], lean["unweighted_minus_mean_b"]) == (
        -50, 0, 50)
    assert lean["color0-1_r"] == 200 and len(names) == len(set(names)) == 3 + 2 * 4 + 4


def test_seed_001s_crops_are_227_of_256():
    import torch

    from pipelines import vision

    assert vision.load_px(227, "random-crop") == 256
    square = torch.arange(256 * 256, dtype=torch.int64).reshape(1, 256, 256).expand(3, -1, -1)
    view = vision.eval_transform(227, "random-crop").transforms[:1]
    centre = torch.nn.Sequential(*view)(square)
    assert centre.shape == (3, 227, 227) and centre[0, 0, 0] == 14 * 256 + 14  # the centre crop, not a resize
    crop = vision.train_transform(227, "random-crop").transforms[:2]
    corners = {int(torch.nn.Sequential(*crop)(square)[0].min()) for _ in range(20)}
    assert len(corners) > 5  # the crops move
    for _ in range(20):  # each is a 227 window of the square, maybe mirrored: never resampled
        window = torch.nn.Sequential(*crop)(square)[0]
        top_left = int(window.min())
        y, x = divmod(top_left, 256)
        expected = square[0, y:y + 227, x:x + 227]
        assert torch.equal(window, expected) or torch.equal(window, expected.flip(-1))


def test_feature_extraction_reports_its_progress_batch_by_batch(tmp_path, settings, capsys):
    """Each batch prints how far it got (a flow's log_prints carries it to the Prefect run's logs); the cached
    table answers the next call without recomputing it."""
    from pipelines.data.collect import collect
    from pipelines.data.sources import parse_spec
    from pipelines.features.cache import snapshot_features

    snap = collect(parse_spec("demo:12", settings), settings, progress=False)
    capsys.readouterr()
    featurizer = ImageFeaturizer(groups=("quality",))
    table = snapshot_features(snap, featurizer, tmp_path / "features", settings.images, batch_size=5)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("features (quality)")]
    n = len(snap.manifest)
    expected = [f"{min(done, n)}/{n}" for done in range(5, n + 5, 5)]
    assert n > 5 and [line.split(": ")[1].split(" images")[0] for line in lines] == expected
    assert len(table) == n
    again = snapshot_features(snap, featurizer, tmp_path / "features", settings.images, batch_size=5)
    assert "features (" not in capsys.readouterr().out
    pd.testing.assert_frame_equal(again, table)
