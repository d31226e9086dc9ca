"""Face filtering keeps what it should (issue 25, item 8): ``--require-faces`` on a mixed set of real photographs.

The portraits are the two real frontal faces that ship with installed packages: scikit-image's astronaut
(Eileen Collins) and matplotlib's Grace Hopper. The photographs without a face are scikit-image's coffee,
cat (chelsea) and rocket and scikit-learn's China temple. Each is varied ten ways (flip, resizes, JPEG
re-encode, crops that keep the face, darker, grey) into a manifest that is collected into a snapshot.

Not used as "no face": scikit-learn's flower and scikit-image's coins, on which OpenCV's Haar cascade finds
false faces above the default threshold in some variants (flower's centre crop 3.8, coins 3.5 > 2.0), and
scikit-image's cameraman, whose face is small and turned away (the cascade finds none: neither a face the
filter should keep nor a photograph without one).
"""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageEnhance, ImageOps

from pipelines.data.collect import collect
from pipelines.data.sources import parse_spec
from pipelines.features import faces
from pipelines.settings import Settings
from pipelines.training.data import TrainingData

PORTRAITS = ("astronaut", "grace_hopper")
NO_FACE = ("coffee", "chelsea", "rocket", "china")


@pytest.fixture(scope="module", autouse=True)
def _shared_prefect():
    """Overrides the tier's fixture: nothing here reports to Prefect, so no server is started for it."""


def _photo(name: str) -> Image.Image:
    if name == "grace_hopper":
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as handle:
            return Image.open(handle).convert("RGB")
    if name == "china":
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image("china.jpg"))
    from skimage import data

    return Image.fromarray(getattr(data, name)())


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _variants(img: Image.Image) -> dict[str, Image.Image]:
    """Ten distinct images of one photograph; on a portrait the face stays upright and at least 3% of it."""
    w, h = img.size
    return {
        "original": img,
        "flipped": ImageOps.mirror(img),
        "half": img.resize((w // 2, h // 2)),
        "quarter": img.resize((w // 4, h // 4)),
        "larger": img.resize((w * 3 // 2, h * 3 // 2)),
        "jpeg40": _jpeg(img, 40),
        "top": img.crop((0, 0, w, h * 3 // 4)),
        "centre": img.crop((w // 8, h // 8, w * 7 // 8, h * 7 // 8)),
        "darker": ImageEnhance.Brightness(img).enhance(0.7),
        "grey": img.convert("L").convert("RGB"),
    }


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: _photo(name) for name in PORTRAITS + NO_FACE}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, photos):
    """A snapshot of every variant of every photograph, collected from a manifest CSV; and each row's name."""
    root = tmp_path_factory.mktemp("faces")
    folder = root / "source"
    folder.mkdir()
    lines = ["image,label"]
    for name, img in photos.items():
        for variant, image in _variants(img).items():
            file = f"{name}-{variant}.jpg"
            image.save(folder / file, format="JPEG", quality=90)
            lines.append(f"{file},{len(lines) % 2}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    home = root / "home"
    settings = Settings(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    snapshot = collect(parse_spec(f"manifest:{folder / 'manifest.csv'}", settings), settings, progress=False)
    names = snapshot.manifest.set_index("image_id")["source_ref"].map(lambda ref: ref.rsplit("/", 1)[-1][:-4])
    return snapshot, settings, names


def test_the_detector_finds_the_portraits_faces_and_none_elsewhere(photos):
    threshold = Settings().features.faces_min_confidence
    found = faces.face_features(list(photos.values())).set_axis(list(photos))
    portraits, others = found.loc[list(PORTRAITS)], found.loc[list(NO_FACE)]
    assert (portraits["face_count"] == 1).all(), found
    assert (portraits["face_confidence"] >= threshold).all(), found
    # the astronaut's face is a small part of a half-length portrait, Grace Hopper's a large part of hers
    assert portraits.loc["astronaut", "face_area"] == pytest.approx(0.034, abs=0.01)
    assert portraits.loc["grace_hopper", "face_area"] == pytest.approx(0.16, abs=0.03)
    assert (others[faces.NAMES] == 0).all().all(), found
    assert faces.has_faces(found, threshold).tolist() == [True] * len(PORTRAITS) + [False] * len(NO_FACE)


def test_require_faces_keeps_every_portrait_variant_and_drops_the_rest(mixed):
    snapshot, settings, names = mixed
    photo = names.str.rsplit("-", n=1).str[0]
    assert len(snapshot.manifest) == 10 * (len(PORTRAITS) + len(NO_FACE)) and names.is_unique
    assert set(snapshot.manifest["split"]) == {"train", "val", "test"}

    everything = TrainingData(snapshot, "binary", settings, require_faces=False)
    data = TrainingData(snapshot, "binary", settings, require_faces=True)
    kept = set(data.manifest["image_id"])
    with_face = set(photo.index[photo.isin(PORTRAITS)])
    without = set(photo.index[photo.isin(NO_FACE)])

    assert kept <= with_face, f"kept without a face: {sorted(names[list(kept - with_face)])}"
    assert kept == with_face, f"portraits dropped: {sorted(names[list(with_face - kept)])}"
    assert not kept & without
    assert len(kept) == 20 and len(everything.manifest) - len(data.manifest) == 40
    counts = data.row_counts
    assert counts["train"] + counts["validation"] + counts["test"] == 20 and counts["validation"] > 0
    # the filter read the cached features the featurizer computed on the snapshot's own decoded images
    found = data.features(data.featurizer(("faces",)))
    confidence = found["face_confidence"].groupby(photo.reindex(found.index)).min()
    assert (confidence[list(PORTRAITS)] >= settings.features.faces_min_confidence).all(), confidence
    assert (found.loc[list(without), "face_count"] == 0).all(), found.loc[list(without)]
