"""The topics recipes' parts (issue 25): visual topics group crops of one photograph together, colour
statistics sit beside their logs, and a user's missing mean views are estimated from their other numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance
from scipy.stats import spearmanr

from pipelines.features import embeddings
from pipelines.features.quality import NAMES as QUALITY_NAMES
from pipelines.features.quality import quality_stats
from pipelines.models.classical import RECIPES, SOCIAL_NUMBERS
from pipelines.models.topics import LogStats, VisualTopics
from pipelines.settings import TrainSettings


def _crops(photo: np.ndarray, n: int, rng: np.random.Generator) -> list[Image.Image]:
    h, w = photo.shape[:2]
    out = []
    for _ in range(n):
        side = int(min(h, w) * rng.uniform(0.5, 0.9))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out.append(Image.fromarray(photo[y:y + side, x:x + side]).resize((64, 64)))
    return out


def test_crops_of_one_photograph_share_a_topic(photographs):
    rng = np.random.default_rng(0)
    names = list(photographs)
    crops = [img for name in names for img in _crops(photographs[name], 8, rng)]
    z = embeddings.embed(crops, px=64)
    topics = VisualTopics(topics=len(names), components=8, seed=0).fit(z)
    members = topics.transform(z)
    assert members.shape == (len(crops), len(names)) and np.allclose(members.sum(1), 1.0)
    assert list(topics.get_feature_names_out()) == [f"topic{i}" for i in range(len(names))]
    nearest = members.argmax(1).reshape(len(names), 8)
    assert all(len(set(row)) == 1 for row in nearest), nearest  # every crop of a photograph in one topic
    assert len({row[0] for row in nearest}) == len(names)  # each photograph its own
    few = VisualTopics(topics=12, components=32).fit(z[:5])  # fewer rows than topics or components
    assert few.transform(z).shape == (len(crops), few.n_topics_) and few.n_topics_ <= 5


def test_a_colour_enhancement_shifts_the_log_statistics_alike_whatever_the_photo(photographs):
    """Chroma multiplied by a factor adds log(factor) to log saturation: one coefficient fits every scene."""
    photos = [Image.fromarray(a).resize((128, 128)) for a in photographs.values()]
    muted = [ImageEnhance.Color(p).enhance(0.5) for p in photos]
    stats = LogStats().fit(quality_stats(np.stack([np.asarray(p) for p in photos])))
    assert list(stats.get_feature_names_out()) == QUALITY_NAMES + [f"log_{n}" for n in QUALITY_NAMES]
    before, after = (pd.DataFrame(stats.transform(quality_stats(np.stack([np.asarray(p) for p in batch]))),
                                  columns=stats.get_feature_names_out()) for batch in (photos, muted))
    shift = (before - after)["log_colourfulness"]
    assert np.allclose(shift, np.log(2), atol=0.1), shift.tolist()
    assert not np.allclose(before["colourfulness"] - after["colourfulness"], np.log(2), atol=0.1)


@pytest.mark.parametrize("recipe", ["social-topics-linear"])
def test_a_missing_mean_views_is_estimated_from_the_users_other_numbers(recipe):
    """A post whose user's mean views were not fetched still ranks by that user's reach among the other
    posts, read from the contacts and groups: the imputer learns mean views from them on the training rows."""
    rng = np.random.default_rng(1)
    n = 600
    reach = rng.normal(0, 1, n)
    table = pd.DataFrame({name: np.nan for name in SOCIAL_NUMBERS}, index=range(n))
    table["log_user_mean_views"] = 5 + reach + rng.normal(0, 0.1, n)
    table["log_user_contacts"] = 3 + 0.8 * reach + rng.normal(0, 0.4, n)
    table["log_user_groups"] = 1 + 0.5 * reach + rng.normal(0, 0.3, n)
    for name in QUALITY_NAMES:
        table[name] = rng.uniform(0.2, 0.8, n)
    for i in range(8):
        table[f"emb{i}"] = rng.normal(0, 1, n)
    missing = rng.uniform(size=n) < 0.4
    table.loc[missing, "log_user_mean_views"] = np.nan
    y = reach + rng.normal(0, 0.3, n)
    train = np.arange(n) < 400
    model = RECIPES[recipe].build("score", RECIPES[recipe].defaults(TrainSettings(), True), TrainSettings())
    model.fit(table[train], y[train])
    held, known = ~train & missing, ~train & ~missing
    # ranked by reach, on the same scale as the posts whose numbers are all known: not parked at the median
    slope = {name: np.polyfit(reach[rows], model.predict(table[rows]), 1)[0] for name, rows in
             (("missing", held), ("known", known))}
    assert slope["missing"] > 0.8 * slope["known"], slope
    assert spearmanr(model.predict(table[~train]), reach[~train]).statistic > 0.95
