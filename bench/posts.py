"""Posts as users bring them, in seed 002's layout, built from real photographs, with the truth kept aside.

Each post is a crop of one of eleven real photographs (scikit-image, scikit-learn, matplotlib), its colour
and brightness changed. What the photo shows makes an *appeal*: which scene it is (an effect per scene,
drawn per generator seed), how colourful and how bright the copy is. Each of the users has a hidden reach;
what a user's profile shows (mean views, contacts, groups) follows it with noise, as on Flickr. A post's
day-30 views are ``exp(5 + reach + 0.6 · appeal + noise)`` spread over 30 days along one of four shapes
(seed 002's scale × shape), and its tags mention what it shows and, more often for reaching users, "explore".

``write_posts`` writes ``posts.csv`` (``post_id, user_id, image_path, posted_at, user_contacts, user_groups,
user_mean_views, photo_count, tags, title, views_d1 … views_d30``; with ``social=False`` only ``post_id,
image_path, posted_at`` and the views), the JPEGs and ``truth.parquet``, which no model reads:
:func:`oracle_scores` turns it into the best achievable ranking of the score label on any rows, with the
social context (reach and appeal known) or from the content alone (appeal only); :func:`column_oracle_scores`
knows the appeal but the reach only as far as the user columns show it.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

DAYS = 30
BASE_LOG_VIEWS = 5.0
APPEAL_WEIGHT = 0.6
NOISE = 0.45
GENERIC_TAGS = ["photo", "canon", "nikon", "2019", "travel", "light", "colour", "day", "weekend", "art"]


@lru_cache(maxsize=1)
def photographs() -> tuple[tuple[str, np.ndarray], ...]:
    """Eleven real colour photographs that ship with installed packages, by a one-word subject."""
    import matplotlib.cbook
    from skimage import data
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        hopper = np.asarray(Image.open(handle).convert("RGB"))
    return (("astronaut", data.astronaut()), ("coffee", data.coffee()), ("cat", data.chelsea()),
            ("rocket", data.rocket()), ("galaxy", data.hubble_deep_field()), ("cells", data.immunohistochemistry()),
            ("retina", data.retina()), ("colorwheel", data.colorwheel()), ("temple", china), ("flower", flower),
            ("portrait", hopper))


def _shapes() -> np.ndarray:
    t = np.arange(1, DAYS + 1) / DAYS
    curves = [1 - np.exp(-t * 10), t, t**2, np.sqrt(t)]
    return np.stack([c / c[-1] for c in curves])


def _render(base: np.ndarray, rng: np.random.Generator, colour: float, brightness: float, side: int) -> bytes:
    h, w = base.shape[:2]
    size = int(min(h, w) * rng.uniform(0.45, 0.9))
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    img = Image.fromarray(base[y:y + size, x:x + size]).resize((side, side), Image.Resampling.BILINEAR)
    if rng.uniform() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = ImageEnhance.Brightness(ImageEnhance.Color(img).enhance(colour)).enhance(brightness)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_posts(folder: Path, n: int = 1200, users: int = 300, seed: int = 0, social: bool = True,
                side: int = 128, missing_share: float = 0.1, reach_weight: float = 1.0) -> Path:
    """``n`` posts by ``users`` users of generator ``seed`` into ``folder``; returns the manifest's path.
    ``missing_share`` of the users' mean views are left empty (profiles not fetched); ``reach_weight`` 0
    makes views depend on the photos alone (a test of what the image models learn)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    scenes = photographs()
    scene_effect = rng.normal(0, 1, len(scenes))
    reach = rng.normal(0, 1, users)
    profile = {
        "user_mean_views": np.round(np.exp(BASE_LOG_VIEWS + reach + rng.normal(0, 0.2, users))),
        "user_contacts": np.round(np.exp(3 + 0.6 * reach + rng.normal(0, 0.6, users))),
        "user_groups": rng.poisson(np.exp(1.5 + 0.3 * reach)),
        "photo_count": np.round(np.exp(4 + rng.normal(0, 1, users))),
    }
    unknown = rng.uniform(size=users) < missing_share
    shapes = _shapes()
    start = datetime(2024, 3, 1, tzinfo=UTC)
    rows, truth = [], []
    for k in range(n):
        user, scene = int(rng.integers(users)), int(rng.integers(len(scenes)))
        colour, brightness = rng.uniform(0.3, 1.7), rng.uniform(0.65, 1.35)
        appeal = (0.8 * scene_effect[scene] + 0.5 * (colour - 1) / 0.4 + 0.3 * (brightness - 1) / 0.2) / 1.0
        name, base = scenes[scene]
        path = f"images/{k:05d}.jpg"
        (folder / path).write_bytes(_render(base, rng, colour, brightness, side))
        expected_log_views = BASE_LOG_VIEWS + reach_weight * reach[user] + APPEAL_WEIGHT * appeal
        scale = np.exp(expected_log_views + rng.normal(0, NOISE))
        daily = np.maximum.accumulate(np.round(scale * shapes[rng.integers(len(shapes))]
                                               * rng.uniform(0.97, 1.03, DAYS)))
        posted = start + timedelta(hours=float(rng.uniform(0, 24 * 60)))
        words = [name] * int(rng.uniform() < 0.8) + list(rng.choice(GENERIC_TAGS, int(rng.integers(0, 3)),
                                                                        replace=False))
        if rng.uniform() < 1 / (1 + np.exp(-1.5 * reach[user])):
            words.append("explore")
        row = {"post_id": f"p{k}", "image_path": path, "posted_at": posted.isoformat()}
        if social:
            row |= {"user_id": f"u{user:04d}", "user_contacts": int(profile["user_contacts"][user]),
                    "user_groups": int(profile["user_groups"][user]),
                    "user_mean_views": "" if unknown[user] else int(profile["user_mean_views"][user]),
                    "photo_count": int(profile["photo_count"][user]), "tags": "|".join(words),
                    "title": f"IMG_{int(rng.integers(1000, 9999))}"}
        rows.append(row | {f"views_d{d + 1}": int(v) for d, v in enumerate(daily)})
        truth.append({"post_id": f"p{k}", "user": user, "reach": float(reach[user]), "appeal": float(appeal),
                      "expected_log_views": float(expected_log_views), "posted_at": posted})
    manifest = folder / "posts.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pd.DataFrame(truth).to_parquet(folder / "truth.parquet", index=False)
    return manifest


def column_oracle_scores(manifest: Path, truth: pd.DataFrame, fit_ids: pd.Series, rows: pd.DataFrame) -> np.ndarray:
    """The best ranking of ``rows`` that the social columns allow: the photo's appeal known, as the oracle
    knows it, but the user's reach only as the user's columns show it, by the linear fit of the hidden reach
    on them (log mean views, log contacts, groups, the "explore" tag; the users without mean views fitted
    apart) over the ``fit_ids`` posts (the training split). How far this falls below :func:`oracle_scores`
    is what no model reading these columns can recover."""
    from sklearn.linear_model import LinearRegression

    posts = pd.read_csv(manifest, dtype={"post_id": str}).set_index("post_id")
    known = truth.set_index("post_id").loc[posts.index]
    mean_views = pd.to_numeric(posts["user_mean_views"], errors="coerce")
    shown = np.column_stack([np.log1p(posts["user_contacts"]), posts["user_groups"],
                             posts["tags"].fillna("").str.split("|").map(lambda tags: "explore" in tags)])
    fit = posts.index.isin(fit_ids.astype(str))
    hidden = known["reach"].to_numpy()
    reach = pd.Series(hidden[fit].mean(), index=posts.index)  # where no training user is like them
    for has_mean in (True, False):
        part = mean_views.notna().to_numpy() == has_mean
        if (part & fit).any():
            x = np.column_stack([np.log(mean_views[part]), shown[part]]) if has_mean else shown[part]
            reach[part] = LinearRegression().fit(x[fit[part]], hidden[part & fit]).predict(x)
    scores = reach + APPEAL_WEIGHT * known["appeal"]
    return scores.loc[rows["post_id"].astype(str)].to_numpy(dtype=float)


def oracle_scores(truth: pd.DataFrame, rows: pd.DataFrame, content_only: bool = False) -> np.ndarray:
    """The best achievable ranking of the ``score`` label on ``rows`` (a snapshot's manifest rows, with
    ``post_id``): the label is log(views over the sequence's 30 days / 30 + 1) (seed 002), so a ranking by
    the expected log views given the user's reach and the photo's appeal; ``content_only``: given the
    appeal alone, a ranking by appeal (the other causes are independent of it)."""
    known = truth.set_index("post_id").loc[rows["post_id"].astype(str)]
    return known["appeal" if content_only else "expected_log_views"].to_numpy(dtype=float)
