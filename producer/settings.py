"""Deployment settings, read from ``IMGGEN_*`` environment variables.

Nothing here connects anywhere: engines and Celery apps are built from these values on first use.
The defaults are the embedded set-up (SQLite database, Celery over SQLite, local artifacts), so
one machine runs imggen with nothing to install.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The model imggen ships, resolved by the workers (the producer never imports imggen).
BUILTIN_SHAPES = "shapes"


def _shipped_model() -> Path | None:
    """The folder of the model imggen ships, found without importing imggen (nor torch)."""
    found = importlib.util.find_spec("imggen")
    if found is None or found.origin is None:
        return None
    return Path(found.origin).parent / "shapes" / "pretrained"


def _default_home() -> Path:
    return Path.home() / ".imggen"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMGGEN_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    """Folder for the embedded database, broker and artifacts when their URLs are not set."""

    database_url: str | None = None
    """SQLAlchemy URL; default ``sqlite:///{home}/imggen.db``."""

    broker_url: str | None = None
    """Celery broker URL; default Celery over SQLite (kombu's SQLAlchemy transport)."""

    artifacts_url: str | None = None
    """Local folder or fsspec URL (``s3://bucket/prefix``); default ``{home}/artifacts``."""

    model: str | None = None
    """Model id (a local diffusers folder) used when a job names none; default ``shapes``, the
    model imggen ships (a ``shapes`` folder under models_dir takes its place)."""

    models_dir: Path | None = None
    """Where model ids without a path are looked up; default ``{home}/models``."""

    model_names: list[str] = []
    """Models the workers serve by name, for API hosts that cannot see the models folder. A job
    may name the default model, a folder under models_dir, or one of these; nothing else."""

    unserved_models: Literal["refuse", "wait"] = "refuse"
    """A job for a model that no worker has registered (``imggen models list``): ``refuse`` it
    at submit, or accept it to ``wait`` for a worker that serves it. Before any worker has
    registered, models are judged by the models folder and ``model_names``."""

    clip_model: str | None = None
    """CLIP model folder for the ``clip_score`` metric; unset: the metric is skipped."""

    max_input_image_bytes: int = 20 * 1024 * 1024
    """Largest input image file accepted for image-to-image."""

    max_input_image_pixels: int = 4096 * 4096
    """Most pixels (width x height) an input image may declare; more is a decompression bomb."""

    redis_url: str | None = None
    """Redis for API quotas and job events; default the broker when that is Redis."""

    webhook_secret: str | None = None
    """Signs the webhooks of jobs whose API key has no secret of its own (HMAC-SHA256); without
    either, a webhook is not sent."""

    webhook_allowed_hosts: list[str] = []
    """Hosts that callback URLs may name although they are internal (a receiver inside the
    deployment); every other internal address is refused, at submit and at send time."""

    webhook_secret_grace_seconds: float = 86400.0
    """After a key rotates its webhook secret, the previous one also signs for this long."""

    webhook_concurrency: int = 8
    """Webhooks each worker sends at once (threads of their own, apart from the sweeper)."""

    webhook_per_host: int = 2
    """Webhooks each worker sends at once to one receiving host."""

    webhook_timeout_seconds: float = 10.0
    """Connect, write and read time-out of one webhook POST."""

    webhook_max_attempts: int = 20
    """Deliveries given up after this many tries (backoff doubles up to 10 minutes)."""

    api_submissions_per_minute: int = 120
    """Per API key, across every API process."""

    api_max_in_flight: int = 100
    """Per API key: jobs queued or running at once."""

    api_max_body_bytes: int = 32 * 1024 * 1024
    """Largest request body the API reads (413 beyond it, before it is buffered); room for a
    largest input image sent as base64."""

    api_wait_seconds: float = 300.0
    """How long an OpenAI- or AUTOMATIC1111-style request (one that answers with the images)
    waits for its job; past it the answer names the job, which goes on."""

    image_url_ttl_seconds: int = 3600
    """How long the image links of OpenAI-style ``url`` responses work."""

    stage_time_limit_seconds: float = 1800.0
    """Hard time limit per stage; the broker's visibility timeout is set above it."""

    broker_visibility_timeout_seconds: float | None = None
    """Redis redelivers an unacked message after this; default twice the stage time limit."""

    worker_soft_shutdown_seconds: float = 0.0
    """On SIGTERM, how long a worker lets running stages go on before handing them back
    (0: let them finish, Celery's plain warm shutdown)."""

    broker_polling_interval: float = 0.2
    """Seconds between polls for brokers that poll (the embedded SQL broker)."""

    log_format: Literal["plain", "json"] = "plain"
    """``json``: one JSON object a log record (API and workers), carrying the job id, stage,
    attempt, batch and lane of the work it is about."""

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'imggen.db'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.home / 'broker.db'}"

    @property
    def resolved_artifacts_url(self) -> str:
        return self.artifacts_url or str(self.home / "artifacts")

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.home / "models"

    @property
    def resolved_loras_dir(self) -> Path:
        """Where LoRA adapters are: ``NAME.safetensors`` under ``loras`` in the models folder."""
        return self.resolved_models_dir / "loras"

    @property
    def default_model(self) -> str:
        return self.model or BUILTIN_SHAPES

    @property
    def resolved_redis_url(self) -> str | None:
        if self.redis_url:
            return self.redis_url
        broker = self.resolved_broker_url
        return broker if broker.startswith(("redis://", "rediss://")) else None

    def model_path(self, model_id: str) -> str:
        """Where the weights of ``model_id`` live: a path as given, a bare name under models_dir;
        the bare name ``shapes`` falls back to the model imggen ships when models_dir has none."""
        if "/" in model_id or model_id.startswith("."):
            return model_id
        folder = self.resolved_models_dir / model_id
        if model_id == BUILTIN_SHAPES and not (folder / "model_index.json").exists():
            shipped = _shipped_model()
            if shipped is not None:
                return str(shipped)
        return str(folder)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
