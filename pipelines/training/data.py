"""The data a training run reads: a snapshot's splits for one task, images decoded once, features cached."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from functools import cached_property

import mlflow
import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import GroupShuffleSplit

from pipelines.data import splits, verdicts
from pipelines.data.images import to_array
from pipelines.data.snapshots import Snapshot
from pipelines.features import faces
from pipelines.features.cache import features_cache, snapshot_features
from pipelines.features.featurizer import ImageFeaturizer
from pipelines.features.profile import Profiler
from pipelines.features.social import TEXT_FEATURE, social_features, social_inputs
from pipelines.settings import Settings
from pipelines.tasks import TARGET


@dataclass
class TrainingData:
    """A snapshot's splits for one task, with images decoded once and kept in memory.

    ``split`` is ``group`` (the snapshot's grouped split) or ``time`` (the latest posts are the test
    split); ``require_faces`` keeps only images with a confident face (seed 003). Both default to the
    training settings. Rows that validation quarantined are left out; a snapshot that failed it is refused.
    """

    snapshot: Snapshot
    task: str
    settings: Settings
    split: str | None = None
    require_faces: bool | None = None
    log_epochs: bool = True

    def __post_init__(self) -> None:
        target = TARGET[self.task]
        s = self.settings.train
        self.split = self.split or s.split
        self.require_faces = s.require_faces if self.require_faces is None else self.require_faces
        if target not in self.snapshot.manifest:
            raise ValueError(f"snapshot {self.snapshot.id} has no {target!r} column for the {self.task} task")
        manifest = self.snapshot.manifest.dropna(subset=[target]).reset_index(drop=True)
        verdict = verdicts.load(self.settings.quarantine_dir, self.snapshot.id)
        if verdict is not None and not verdict.passed:
            raise verdicts.FailedValidation(verdict.refusal(self.snapshot.id))
        quarantined = manifest["image_id"].astype(str).isin(verdict.quarantined if verdict else ())
        self.quarantined = int(quarantined.sum())
        manifest = manifest[~quarantined].reset_index(drop=True)
        if self.split == "time":
            if "posted_at" not in manifest:
                raise ValueError(f"--split time needs a posted_at column, which snapshot {self.snapshot.id} lacks")
            manifest["split"] = splits.time_splits(manifest["posted_at"], self.settings.splits).to_numpy()
        elif self.split != "group":
            raise ValueError(f"unknown split {self.split!r}; expected group or time")
        if self.require_faces:
            found = self.features(self.featurizer(("faces",))).loc[manifest["image_id"]]
            keep = faces.has_faces(found, self.settings.features.faces_min_confidence).to_numpy()
            if not keep.any():
                raise ValueError(f"--require-faces left no image of snapshot {self.snapshot.id} (no face detected "
                                 f"with confidence >= {self.settings.features.faces_min_confidence})")
            manifest = manifest[keep].reset_index(drop=True)
        self.manifest = self.ensure_val(manifest)

    def ensure_val(self, manifest: pd.DataFrame) -> pd.DataFrame:
        """``manifest`` with a val split: as it is when it has one, else a grouped share of its train rows (the
        val split's share of train + val), as when few groups leave the hashed val split empty."""
        if (manifest["split"] == "val").any():
            return manifest
        train = manifest.index[manifest["split"] == "train"]
        groups = (manifest["group"] if "group" in manifest else manifest["image_id"]).astype(str)
        if groups[train].nunique() < 2:
            raise ValueError(f"snapshot {self.snapshot.id} has too few groups in train for a validation split")
        share = self.settings.splits.val / (self.settings.splits.train + self.settings.splits.val)
        _, held = next(GroupShuffleSplit(1, test_size=share, random_state=self.settings.train.seed)
                       .split(train, groups=groups[train]))
        split = manifest["split"].to_numpy().copy()
        split[train[held]] = "val"
        return manifest.assign(split=split)

    @property
    def row_counts(self) -> dict[str, int]:
        """What training reads, split by split, and what validation kept out of it."""
        counts = self.manifest["split"].value_counts()
        return {"train": int(counts.get("train", 0)), "validation": int(counts.get("val", 0)),
                "test": int(counts.get("test", 0)), "quarantined": self.quarantined}

    def rows(self, split: str) -> pd.DataFrame:
        return self.manifest[self.manifest["split"] == split]

    def y(self, split: str) -> np.ndarray:
        return self.rows(split)[TARGET[self.task]].to_numpy()

    def groups(self, split: str) -> np.ndarray:
        rows = self.rows(split)
        return (rows["group"] if "group" in rows else rows["image_id"]).astype(str).to_numpy()

    def engagement(self, split: str) -> np.ndarray:
        """A continuous engagement value behind the target, for ordinal bins and ranking pairs."""
        rows = self.rows(split)
        if self.task == "binary":
            for column in ("likes_per_follower", "score"):
                if column in rows and rows[column].notna().all():
                    return rows[column].to_numpy(dtype=float)
        return self.y(split).astype(float)

    def social(self, split: str) -> pd.DataFrame:
        return social_inputs(self.rows(split))

    @cached_property
    def images(self) -> dict[str, Image.Image]:
        limits = self.settings.images
        return dict(zip(self.manifest["image_id"], self.snapshot.decode_images(self.manifest["image_path"], limits)))

    def trunk_at(self, backbone: str, px: int) -> tuple[str | None, dict]:
        """An embedding trunk as an ONNX graph from the machine's cache (exported and checked on training
        images the first time) and its parity record; ``(None, why)`` when it cannot be."""
        from pipelines.features import embeddings
        from pipelines.vision import WeightsUnavailable

        try:
            return embeddings.trunk_graph(backbone, px, self.settings.cache_dir, self.split_images("train"))
        except WeightsUnavailable as exc:
            return None, {"passed": False, "reason": str(exc)[:500]}
        except Exception as exc:  # an operator the exporter or the runtime lacks: torch embeds
            return None, {"passed": False, "reason": f"export failed: {type(exc).__name__}: {exc}"[:500]}

    @cached_property
    def trunk(self) -> tuple[str | None, dict]:
        """The drift profile's embedding trunk (:meth:`trunk_at`)."""
        return self.trunk_at(Profiler.embed_backbone, Profiler.embed_px)

    @cached_property
    def profiler(self) -> Profiler:
        """The drift monitor's features, with the embedding's PCA fitted on the training images."""
        return Profiler.fit(self.split_images("train"), self.settings.drift.projection_dims, *self.trunk)

    @cached_property
    def test_profile(self) -> pd.DataFrame:
        """The test split's monitored features: every candidate's drift reference, beside its scores."""
        profile = self.profiler.transform(self.split_images("test"))
        profile.insert(0, "image_id", self.rows("test")["image_id"].to_numpy())
        return profile

    def split_images(self, split: str) -> list[Image.Image]:
        return [self.images[i] for i in self.rows(split)["image_id"]]

    def pixels(self, split: str, px: int) -> np.ndarray:
        return np.stack([to_array(self.images[i], px) for i in self.rows(split)["image_id"]])

    def featurizer(self, groups: tuple[str, ...]) -> ImageFeaturizer:
        return ImageFeaturizer.from_settings(self.settings.features, groups)

    def features(self, featurizer: ImageFeaturizer) -> pd.DataFrame:
        """The snapshot's features, each image group computed once and cached, whichever candidate asks;
        the social group straight from the manifest (no image to decode); the embeddings with the trunk's
        ONNX graph where it passed its check, as the logged model will (:meth:`embedding_network`)."""
        parts = []
        for group in featurizer.groups:
            one = replace(featurizer, groups=(group,))
            if group == "social":
                parts.append(self.social_table)
                continue
            cached = features_cache(self.snapshot, one, self.settings.features_dir).exists()
            network = self.embedding_network(one) if group == "embeddings" and not cached else None
            parts.append(snapshot_features(self.snapshot, one, self.settings.features_dir, self.settings.images,
                                           self.settings.features.batch_size, network))
        return pd.concat(parts, axis=1)

    def embedding_network(self, featurizer: ImageFeaturizer):
        """The featurizer's embedding trunk in ONNX Runtime (:meth:`trunk_at`), or None where torch embeds."""
        from pipelines import runtime

        return runtime.onnx_network("onnx", *self.trunk_at(featurizer.embed_backbone, featurizer.embed_px))[0]

    @cached_property
    def social_table(self) -> pd.DataFrame:
        """Every row's social features by image id; the ``text`` column only where a training post has words."""
        manifest = self.snapshot.manifest
        table = social_features(social_inputs(manifest)).set_index(pd.Index(manifest["image_id"], name="image_id"))
        train_words = table.loc[self.rows("train")["image_id"], TEXT_FEATURE].str.len() > 0
        return table if train_words.any() else table.drop(columns=TEXT_FEATURE)

    def x(self, split: str, featurizer: ImageFeaturizer) -> pd.DataFrame:
        return self.features(featurizer).loc[self.rows(split)["image_id"]]

    def view(self, manifest: pd.DataFrame | None = None) -> TrainingData:
        """The same data on other rows or splits (repeats, trials): images and features stay shared and
        per-epoch metrics are not logged, so the candidate's own curves stay clean."""
        other = copy.copy(self)
        other.manifest = self.manifest if manifest is None else manifest.reset_index(drop=True)
        other.log_epochs = False
        return other

    @cached_property
    def dataset(self):
        return mlflow.data.from_pandas(self.manifest.drop(columns=["posted_at"], errors="ignore"),
                                       source=str(self.snapshot.path), name=self.snapshot.id,
                                       targets=TARGET[self.task])
