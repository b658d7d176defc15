"""Samplers a job may choose instead of its model's own: diffusers schedulers by a short name.

Each is built from the model's own scheduler config, so what the model was trained with (its
beta schedule, its prediction type) carries over; only the stepping rule changes.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from imggen.errors import InvalidInput

# name -> (scheduler class, config overrides). The producer's job contract lists the same names
# (producer.spec.SCHEDULERS); a test keeps the two in step.
SAMPLERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": (UniPCMultistepScheduler, {}),
    # For latent-consistency models (an LCM-distilled UNet or an LCM LoRA): 2-8 steps, guidance
    # about 1-2. Any UNet model runs it; others draw poorly with it.
    "lcm": (LCMScheduler, {}),
}


def build_scheduler(model_scheduler: SchedulerMixin, sampler: str | None) -> SchedulerMixin:
    """A fresh scheduler for one run: the model's own (``sampler`` None) or the named sampler
    over the model's config. Raises InvalidInput naming ``scheduler`` for an unknown name."""
    if sampler is None:
        return type(model_scheduler).from_config(model_scheduler.config)
    cls, overrides = _named(sampler)
    return cls.from_config(model_scheduler.config, **overrides)


def sampler_identity(model_scheduler: SchedulerMixin, sampler: str | None) -> str:
    """What decides the stepping rule, for cache keys: a sampler that names the model's own
    scheduler keys the same as the model's default."""
    if sampler is None:
        return type(model_scheduler).__name__
    cls, overrides = _named(sampler)
    flags = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return f"{cls.__name__}({flags})" if flags else cls.__name__


# Schedulers whose step needs nothing from earlier steps but the step index: a batch of them
# may lose rows between steps. Multistep ones (DPM++, UniPC, PNDM, LMS) keep earlier model
# outputs per row.
_ROW_INDEPENDENT = (
    DDIMScheduler,
    DDPMScheduler,
    EulerDiscreteScheduler,
    EulerAncestralDiscreteScheduler,
    LCMScheduler,
)


def rows_are_independent(scheduler: SchedulerMixin) -> bool:
    return type(scheduler) in _ROW_INDEPENDENT


# Of those, the ones that draw no noise while stepping (DDIM at eta 0, Euler without churn, as
# imggen runs them): stopped after k steps and resumed from the latents of step k, a run draws
# the same images.
_RESUMES_EXACTLY = (DDIMScheduler, EulerDiscreteScheduler)


def resumes_exactly(scheduler: SchedulerMixin) -> bool:
    return type(scheduler) in _RESUMES_EXACTLY


def _named(sampler: str) -> tuple[type[SchedulerMixin], dict[str, Any]]:
    try:
        return SAMPLERS[sampler]
    except KeyError:
        known = ", ".join(SAMPLERS)
        raise InvalidInput(f"scheduler: {sampler!r} is not one of {known}") from None


def step_noise(scheduler: SchedulerMixin, seeds: Sequence[int]) -> dict[str, Any]:
    """Keyword arguments that give a stochastic sampler (Euler ancestral) one generator per
    image, so an image's noise does not depend on the batch it lands in; empty for samplers
    that draw no noise while stepping."""
    if "generator" not in inspect.signature(scheduler.step).parameters:
        return {}
    # A stream of its own, apart from the initial noise drawn from the same seed.
    return {"generator": [torch.Generator("cpu").manual_seed(seed ^ 0x5A5A5A5A) for seed in seeds]}
