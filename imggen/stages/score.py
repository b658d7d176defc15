"""Stage 5, score: quality numbers for one image.

These metrics need no model and no reference image, so every job gets them:

- ``sharpness``: variance of the Laplacian of the luminance (blur lowers it).
- ``contrast``: RMS contrast, the standard deviation of luminance in [0, 1].
- ``colorfulness``: Hasler and Süsstrunk (2003), from the opponent colour channels.
- ``entropy``: Shannon entropy of the 8-bit luminance histogram, in bits (0 to 8).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

METRIC_VERSION = "imggen-noref-1"


def score(image: Image.Image) -> dict[str, float]:
    """Return the no-reference metrics of ``image`` by name."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    luminance = rgb @ np.array([0.299, 0.587, 0.114])
    return {
        "sharpness": _laplacian_variance(luminance / 255.0),
        "contrast": float(luminance.std() / 255.0),
        "colorfulness": _colorfulness(rgb),
        "entropy": _entropy(luminance),
    }


def _laplacian_variance(gray: np.ndarray) -> float:
    if min(gray.shape) < 3:
        return 0.0
    laplacian = (
        gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    )
    return float(laplacian.var())


def _colorfulness(rgb: np.ndarray) -> float:
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = red - green
    yb = 0.5 * (red + green) - blue
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _entropy(luminance: np.ndarray) -> float:
    counts = np.bincount(
        np.clip(np.round(luminance), 0, 255).astype(np.int64).ravel(), minlength=256
    )
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())
