"""The built-in demo data set: synthetic scenes whose popularity truly depends on what they show.

Each image is a background, a few distractor shapes, a texture and one subject. Hidden attributes
(colourfulness, contrast, brightness, the subject's size and placement) make a visual appeal;
users with followers, account age and posting habits make a social effect. Likes, views (a 30-day
cumulative sequence = scale × one of a few shape prototypes), favorites and comments follow from
both plus noise. The latent values go to the oracle table, which training never reads, so every
demo result can be reported beside the best achievable one.
"""

from __future__ import annotations

import colorsys
import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from pipelines.data.images import to_jpeg
from pipelines.data.sources.base import Item, SpecError
from pipelines.settings import Settings

CATEGORIES = ["food", "travel", "pets", "portrait", "nature"]
# Scene categories the default data set never draws: a shift for the drift monitor to be tested on.
VARIANTS = ("city",)
# How appeal makes engagement: "shifted" keeps every image and user and changes what the audience likes
# (muted, dark, off-centre photos), a decay that only realized outcomes can reveal.
RULES = ("default", "shifted")
DAYS = 30
# What a fresh draw written by :func:`write_draw` may change about the world: darker photos (input drift),
# a scene category never drawn before (input drift), or what the audience likes (decay, no input drift).
SHIFTS = ("none", "dark", "city", "taste")
DRAW_STRIDE = 1000  # draw N is generator seed demo.seed + 1000·N: apart from the demo (draw 0) and its probe (+1)
DARK = 0.4  # a dark draw's brightness factor, the demo's own shifted probe
MANIFEST_COLUMNS = ("post_id", "user_id", "posted_at", "followers", "account_age_days", "posts_per_week",
                    "tag_count", "likes", "views", "favorites", "comments", *(f"views_d{d}" for d in range(1, DAYS + 1)))


def _shape_prototypes() -> np.ndarray:
    """Cumulative 30-day view curves normalised to 1 on day 30: fast, steady, late bloom, step."""
    t = np.arange(1, DAYS + 1) / DAYS
    curves = [
        1 - np.exp(-t * 12),
        t,
        t**3,
        np.where(t < 0.3, t, 0.3 + 0.7 * (t - 0.3) / 0.7) ** 0.5,
    ]
    return np.stack([c / c[-1] for c in curves])


def _appeal(attrs: dict, rule: str) -> float:
    """The visual appeal, standardised to about zero mean and unit spread over the attributes' ranges."""
    if rule == "shifted":
        raw = (-1.3 * attrs["colourfulness"] + 0.3 * attrs["contrast"] - 2.5 * (attrs["brightness"] - 0.3) ** 2
               - 0.4 * attrs["centred"] - 0.6 * attrs["subject_size"])
        return (raw + 1.17) / 0.51
    raw = (1.3 * attrs["colourfulness"] + 1.0 * attrs["contrast"] - 2.5 * (attrs["brightness"] - 0.6) ** 2
           + 0.4 * attrs["centred"] + 0.6 * attrs["subject_size"])
    return (raw - 1.25) / 0.5


@dataclass
class DemoSource:
    n: int
    seed: int
    size: int
    users: int
    variant: str | None = None  # None: the default scenes; "city": a skyline behind every subject
    rule: str = "default"

    kind = "demo"
    default_label = "median-split"

    @classmethod
    def from_location(cls, location: str, settings: Settings) -> DemoSource:
        """``demo[:N][?seed=S&rule=R]``: N images (default ``demo.size``) of generator seed S."""
        cfg = settings.demo
        count, _, query = location.partition("?")
        if count and (not count.isdigit() or int(count) < 10):
            raise SpecError(f"demo takes a count of at least 10 (demo:N), not {count!r}")
        options = dict(parse_qsl(query, keep_blank_values=True))
        unknown = set(options) - {"seed", "rule"}
        if unknown or not options.get("seed", "0").isdigit():
            raise SpecError(f"demo options are seed=INT and rule={'|'.join(RULES)}, not {query!r}")
        n = int(count) if count else cfg.size
        return cls(n=n, seed=int(options.get("seed", cfg.seed)), size=cfg.image_px,
                   users=min(cfg.users, max(10, n // 10)), rule=options.get("rule", "default"))

    def __post_init__(self) -> None:
        if self.variant is not None and self.variant not in VARIANTS:
            raise SpecError(f"demo variant must be one of {list(VARIANTS)}, not {self.variant!r}")
        if self.rule not in RULES:
            raise SpecError(f"demo rule must be one of {list(RULES)}, not {self.rule!r}")

    def describe(self) -> dict:
        variant = {"variant": self.variant} if self.variant else {}
        rule = {"rule": self.rule} if self.rule != "default" else {}
        return {"kind": self.kind, "n": self.n, "seed": self.seed, "size": self.size, "users": self.users,
                **variant, **rule}

    def items(self) -> Iterator[Item]:
        rng = np.random.default_rng(self.seed)
        users = self._users(rng)
        prototypes = _shape_prototypes()
        start = datetime(2026, 1, 1, tzinfo=UTC)
        for i in range(self.n):
            user = int(rng.integers(self.users))
            attrs = {
                "colourfulness": rng.uniform(0, 1),
                "contrast": rng.uniform(0, 1),
                "brightness": rng.uniform(0.15, 0.95),
                "subject_size": rng.uniform(0.15, 0.45),
                "centred": rng.uniform(0, 1),
            }
            image = self._render(rng, attrs)
            posted_at = start + timedelta(hours=float(rng.uniform(0, 24 * 300)))
            tag_count = int(rng.integers(0, 15))
            # the outcome's own draws, apart from the inputs': a new rule changes outcomes, never an image
            chance = np.random.default_rng((self.seed, i))
            appeal = _appeal(attrs, self.rule)
            followers = users["followers"][user]
            social = 0.9 * np.log(followers) + 0.15 * users["activity"][user]
            log_likes = social + 0.8 * appeal + chance.normal(0, 0.45) - 1.0
            likes = int(np.round(np.exp(log_likes)))
            scale = float(np.exp(social + 0.6 * appeal + chance.normal(0, 0.4) + 1.5))
            shape = prototypes[int(chance.integers(len(prototypes)))]
            daily = np.maximum.accumulate(np.round(scale * shape * chance.uniform(0.97, 1.03, DAYS)))
            fields = {
                "post_id": f"demo-{self.seed}-{i}",
                "user_id": f"u{user:04d}",
                "group": f"u{user:04d}",
                "category": self.variant or CATEGORIES[i % len(CATEGORIES)],
                "followers": int(followers),
                "account_age_days": int(users["age"][user]),
                "posts_per_week": float(users["posts_per_week"][user]),
                "posted_at": posted_at,
                "likes": likes,
                "views": int(daily[-1]),
                "favorites": int(chance.poisson(0.002 * daily[-1] * np.exp(0.5 * appeal))),
                "comments": int(chance.poisson(0.01 * likes)),
                "tag_count": tag_count,
                **{f"views_d{d + 1}": int(v) for d, v in enumerate(daily)},
            }
            expected_log_views = social + 0.6 * appeal + 1.5
            oracle = {"appeal": float(appeal), "expected_log_ratio": float(0.8 * appeal - 0.1 * np.log(followers)
                                                                           + 0.15 * users["activity"][user]),
                      "expected_log_likes": float(social + 0.8 * appeal - 1.0),
                      "expected_log_views": float(expected_log_views),
                      "expected_log_favorites": float(np.log(0.002) + expected_log_views + 0.5 * appeal)}
            ref = f"demo://{self.seed}/{i}" if self.variant is None else f"demo://{self.variant}/{self.seed}/{i}"
            yield Item(ref=ref, fields=fields, data=to_jpeg(image), oracle={**oracle, **attrs})

    def _users(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {
            "followers": np.maximum(10, rng.lognormal(6.5, 1.2, self.users)).round(),
            "age": rng.integers(30, 3000, self.users),
            "posts_per_week": rng.gamma(2.0, 1.5, self.users).round(2),
            "activity": rng.normal(0, 1, self.users),
        }

    def _render(self, rng: np.random.Generator, attrs: dict) -> Image.Image:
        s = self.size
        sat = 0.05 + 0.9 * attrs["colourfulness"]
        value = attrs["brightness"]
        hue = rng.uniform(0, 1)
        top = np.array(colorsys.hsv_to_rgb(hue, sat, value))
        bottom = np.array(colorsys.hsv_to_rgb((hue + rng.uniform(-0.1, 0.1)) % 1, sat, value * 0.85))
        ramp = np.linspace(0, 1, s)[:, None, None]
        background = (top * (1 - ramp) + bottom * ramp) * np.ones((1, s, 3))
        texture = rng.normal(0, rng.uniform(0.0, 0.06), (s, s, 1))
        pixels = np.clip((background + texture) * 255, 0, 255).astype(np.uint8)
        img = Image.fromarray(pixels)
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(0, 4))):
            x, y, r = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(s * 0.03, s * 0.1)
            colour = tuple(int(c * 255) for c in colorsys.hsv_to_rgb(rng.uniform(0, 1), sat * 0.8, value))
            draw.rectangle([x - r, y - r, x + r, y + r], fill=colour)
        if self.variant == "city":
            self._skyline(rng, draw, value)
        # The subject: its luminance differs from the background by the contrast attribute.
        direction = 1 if value < 0.55 else -1
        subject_value = float(np.clip(value + direction * (0.1 + 0.8 * attrs["contrast"]), 0, 1))
        subject_hue = (hue + 0.5 + rng.uniform(-0.15, 0.15)) % 1
        colour = tuple(int(c * 255) for c in colorsys.hsv_to_rgb(subject_hue, min(1, sat + 0.1), subject_value))
        offset = (1 - attrs["centred"]) * 0.35 * s
        angle = rng.uniform(0, 2 * np.pi)
        cx, cy = s / 2 + offset * np.cos(angle), s / 2 + offset * np.sin(angle)
        r = attrs["subject_size"] * s / 2
        if rng.uniform() < 0.5:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=colour)
        return img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0, 0.8))))

    def _skyline(self, rng: np.random.Generator, draw: ImageDraw.ImageDraw, value: float) -> None:
        """Dark grey buildings with lit windows along the bottom: hard vertical edges no default scene has."""
        s, count = self.size, int(rng.integers(4, 9))
        for k in range(count):
            left, right = k * s / count, (k + 1) * s / count - 1
            top = s * (1 - rng.uniform(0.3, 0.8))
            grey = int(255 * value * rng.uniform(0.2, 0.5))
            draw.rectangle([left, top, right, s], fill=(grey, grey, int(grey * 1.1)))
            step = max(3, s // 24)
            for wy in np.arange(top + step, s - step, 2 * step):
                for wx in np.arange(left + step / 2, right - step, 2 * step):
                    if rng.uniform() < 0.5:
                        draw.rectangle([wx, wy, wx + step / 2, wy + step / 2], fill=(250, 220, 120))



def next_draw(folder: Path) -> int:
    """The draw after the one the folder holds (``draw.json``), 1 for a new folder."""
    try:
        return int(json.loads((Path(folder) / "draw.json").read_text())["draw"]) + 1
    except (FileNotFoundError, KeyError, ValueError, TypeError):
        return 1


def write_draw(folder: Path, settings: Settings, draw: int | None = None, shift: str = "none",
               n: int | None = None) -> dict:
    """Write a fresh draw of the demo generator into ``folder`` as the team's incoming data: its photos under
    ``draw-NNNN/`` and ``manifest.csv`` (the photo, its user and engagement) replaced whole, so a collection
    reading the manifest meanwhile sees the previous draw or this one, never half of one.

    Draw N is generator seed ``demo.seed + 1000·N`` (new scenes, new users: fresh data to learn from; the
    demo itself is draw 0), ``demo.size`` photos unless ``n`` says; ``shift`` darkens the photos, draws a
    scene category the demo never had (``city``) or changes what the audience likes (``taste``)."""
    if shift not in SHIFTS:
        raise SpecError(f"--shift must be one of {list(SHIFTS)}, not {shift!r}")
    folder = Path(folder)
    draw = next_draw(folder) if draw is None else draw
    if draw < 1:
        raise SpecError(f"--draw must be 1 or more (draw 0 is the demo's own data), not {draw}")
    n = settings.demo.size if n is None else n
    if n < 10:
        raise SpecError(f"a draw needs at least 10 photos, not {n}")
    source = DemoSource(n=n, seed=settings.demo.seed + DRAW_STRIDE * draw, size=settings.demo.image_px,
                        users=min(settings.demo.users, max(10, n // 10)), variant="city" if shift == "city" else None,
                        rule="shifted" if shift == "taste" else "default")
    photos = folder / f"draw-{draw:04d}"
    photos.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in source.items():
        data = item.data
        if shift == "dark":
            data = to_jpeg(ImageEnhance.Brightness(Image.open(io.BytesIO(data)).convert("RGB")).enhance(DARK))
        name = f"{item.fields['post_id']}.jpg"
        (photos / name).write_bytes(data)
        row = {column: item.fields[column] for column in MANIFEST_COLUMNS}
        row["posted_at"] = row["posted_at"].isoformat()
        rows.append({"image": f"{photos.name}/{name}", **row})
    tmp = folder / f".manifest.csv.{os.getpid()}.tmp"
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(folder / "manifest.csv")
    summary = {"folder": str(folder), "manifest": str(folder / "manifest.csv"), "draw": draw, "shift": shift,
               "photos": len(rows), "seed": source.seed, "images": str(photos)}
    (folder / "draw.json").write_text(json.dumps(summary))
    return summary
