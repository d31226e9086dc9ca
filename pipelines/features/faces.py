"""Faces (seed 003 filters on them): how many, how large, and how sure the detector is.

OpenCV's frontal-face Haar cascade (shipped with ``opencv-python-headless<5``) runs on a grey copy
whose longest side is at most ``max_px``; ``detectMultiScale3`` gives each detection a level
weight, the detector's confidence, which the ``--require-faces`` filter thresholds.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import pandas as pd
from PIL import Image

NAMES = ["face_count", "face_area", "face_confidence"]
CASCADE = "haarcascade_frontalface_default.xml"


@lru_cache
def _cascade() -> cv2.CascadeClassifier:
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise RuntimeError("this OpenCV build has no Haar cascades; install opencv-python-headless<5")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    if cascade.empty():
        raise RuntimeError(f"cannot load {CASCADE} from {cv2.data.haarcascades}")
    return cascade


def detect(img: Image.Image, max_px: int = 512, min_confidence: float = 0.0) -> list[tuple[float, float]]:
    """``(area as a share of the image, confidence)`` of every face at least ``min_confidence`` sure."""
    grey = img.convert("L")
    grey.thumbnail((max_px, max_px))
    pixels = np.asarray(grey)
    min_side = max(20, min(pixels.shape) // 20)
    found = _cascade().detectMultiScale3(pixels, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side),
                                         outputRejectLevels=True)
    boxes, _, weights = found
    area = float(pixels.shape[0] * pixels.shape[1])
    return [(float(w * h) / area, float(c)) for (_, _, w, h), c in zip(boxes, np.ravel(weights), strict=True)
            if c >= min_confidence]


def face_features(images: list[Image.Image], max_px: int = 512, min_confidence: float = 0.0) -> pd.DataFrame:
    """Count, largest area (share of the image) and best confidence of the faces in each image."""
    rows = []
    for img in images:
        faces = detect(img, max_px, min_confidence)
        rows.append([len(faces), max((a for a, _ in faces), default=0.0), max((c for _, c in faces), default=0.0)])
    return pd.DataFrame(np.asarray(rows, dtype=float).reshape(-1, 3), columns=NAMES)


def has_faces(features: pd.DataFrame, min_confidence: float) -> pd.Series:
    """The ``--require-faces`` filter: at least one face detected with ``min_confidence``."""
    return (features["face_count"] > 0) & (features["face_confidence"] >= min_confidence)
