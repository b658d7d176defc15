"""Errors raised by the generation library. One root, each class says when it is raised."""

from __future__ import annotations


class GenerationError(Exception):
    """Root of the errors imggen's stages raise on purpose."""


class InvalidInput(GenerationError, ValueError):
    """A stage was given arguments it cannot work with; retrying will not help."""


class ModelNotFound(InvalidInput):
    """No model folder at the given path, or one without safetensors weights."""


class UnsupportedModel(InvalidInput):
    """A model folder of a pipeline class imggen has no family for, or whose parts do not fit
    its family (an inpainting UNet, a refiner, encoders of the wrong width)."""


class ModelLoadError(GenerationError):
    """A model folder that looks complete failed to load (an I/O error, an interrupted read):
    worth another attempt, unlike ModelNotFound."""


class StageAborted(GenerationError):
    """A progress callback asked the stage to stop (the job was canceled or lost its lease)."""
