"""Stage 5, score: quality numbers for each image.

- ``clip_score``: prompt alignment with a CLIP model (torchmetrics), when one is configured.
- ``mse``, ``psnr``, ``ssim``: against the input image, for image-to-image (torchmetrics).

And these, which need no model and no reference, so every job gets them:

- ``sharpness``: variance of the Laplacian of the luminance (blur lowers it).
- ``contrast``: RMS contrast, the standard deviation of luminance in [0, 1].
- ``colorfulness``: Hasler and Süsstrunk (2003), from the opponent colour channels.
- ``entropy``: Shannon entropy of the 8-bit luminance histogram, in bits (0 to 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from imggen.aux_models import Clip

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


PSNR_CAP = 100.0  # dB

# Metrics where a lower value is better; every other metric is better when higher.
LOWER_IS_BETTER = frozenset({"mse"})


def reference_metrics(image: Image.Image, reference: Image.Image) -> dict[str, float]:
    """MSE, PSNR and SSIM of ``image`` against ``reference`` (resized to match), in [0, 1]."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    generated = _to_unit_tensor(image)
    target = _to_unit_tensor(reference.convert("RGB").resize(image.size, Image.Resampling.LANCZOS))
    return {
        "mse": float(torch.mean((generated - target) ** 2)),
        # Identical images have an infinite PSNR, which JSON cannot carry: cap it at 100 dB.
        "psnr": min(float(peak_signal_noise_ratio(generated, target, data_range=1.0)), PSNR_CAP),
        "ssim": float(
            structural_similarity_index_measure(generated, target, data_range=1.0)  # type: ignore[arg-type]
        ),
    }


@torch.inference_mode()
def clip_scores(clip: Clip, images: Sequence[Image.Image], prompt: str) -> list[float]:
    """CLIP score of each image against ``prompt``: ``max(100 * cos(image, text), 0)``.

    The definition of Hessel et al. (2021) as torchmetrics computes it. torchmetrics' own
    ``clip_score`` (1.9) breaks on transformers 5, whose ``get_*_features`` return output
    objects instead of tensors, hence these few lines.
    """
    inputs = clip.processor(
        text=[prompt],
        images=[image.convert("RGB") for image in images],
        return_tensors="pt",
        padding=True,
        truncation=True,
    ).to(clip.device)
    image_features = _features(clip.model.get_image_features(pixel_values=inputs.pixel_values))
    text_features = _features(
        clip.model.get_text_features(
            input_ids=inputs.input_ids, attention_mask=inputs.attention_mask
        )
    )
    cosine = torch.nn.functional.cosine_similarity(image_features, text_features, dim=-1)
    return [float(value) for value in (100 * cosine).clamp(min=0)]


def _features(output: Any) -> torch.Tensor:
    # A tensor up to transformers 4, an output object with pooler_output from 5 on.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def best_of(
    scores: Sequence[dict[str, float]], metric: str, keep: int
) -> tuple[list[int], str | None]:
    """Indices of the ``keep`` best images by ``metric`` (ties: lower index first).

    Returns every index, with the reason, when an image lacks the metric (its model is not set).
    """
    if any(metric not in image_scores for image_scores in scores):
        return list(range(len(scores))), f"keep_best skipped: no {metric} for these images"
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    ranked = sorted(range(len(scores)), key=lambda i: (sign * scores[i][metric], i))
    return sorted(ranked[:keep]), None


def _to_unit_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
