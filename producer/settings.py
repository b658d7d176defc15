"""Deployment settings, read from ``IMGGEN_*`` environment variables.

Nothing here connects anywhere: engines and Celery apps are built from these values on first use.
The defaults are the embedded set-up (SQLite database, Celery over SQLite, local artifacts), so
one machine runs imggen with nothing to install.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The model imggen ships, resolved by the workers (the producer never imports imggen).
BUILTIN_SHAPES = "shapes"


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

    expand_model: str | None = None
    """Causal language model folder for the expand stage; unset: prompts pass through."""

    expand_max_new_tokens: int = 24
    """Most tokens the expander may add to a prompt."""

    expand_words_file: Path | None = None
    """A file of allowed words (one a line): the expander may add only these (style words)."""

    embed_model: str | None = "packaged"
    """Sentence-embedding model folder that maps prompts onto a small model's vocabulary (the
    shapes model's): ``packaged`` uses the one the ``language`` extra installs, ``none`` turns
    the mapping off."""

    caption_model: str | None = None
    """Image-to-text model folder that captions input images of jobs without a prompt."""

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

    batch_max_images: int = 8
    """Denoise compatible jobs together, up to this many images a batch (1: no batching)."""

    batch_window_ms: float = 0.0
    """When a batch is not full, wait this long once for more compatible jobs."""

    exact_cache: bool = True
    """Reuse the latents of an identical earlier image instead of denoising again."""

    semantic_cache: bool = False
    """Start from a cached intermediate latent of a similar prompt and skip steps (NIRVANA).
    Changes results (a hit does not follow the job's seed), so it is opt-in per deployment."""

    semantic_levels: list[tuple[float, float]] = [(0.98, 0.6), (0.95, 0.4), (0.9, 0.2)]
    """(prompt similarity at least, fraction of the steps skipped), best first."""

    cache_max_entries: int = 20000
    """Cache rows kept; the least recently used are evicted beyond this."""

    chain_stages: bool = True
    """Run a job's next stage in the same process right after committing one, when this worker
    consumes that stage's queue (never into a batched denoise, whose jobs gather in its queue):
    no broker round trip, and the stage finds its inputs in memory. Off: every stage is a
    message."""

    handover_mb: int = 256
    """Memory each worker process keeps of the artifacts its stages just wrote, for the next
    stage when it runs in the same process (it then reads nothing back); 0: always read."""

    device: str = "auto"
    """Worker device for the models: ``auto`` (CUDA when present), ``cpu``, ``cuda:1``…"""

    dtype: str = "auto"
    """Worker precision: ``auto`` (fp16 on CUDA, fp32 on the CPU), ``fp32``, ``fp16``, ``bf16``."""

    torch_compile: bool = False
    """Wrap each UNet in ``torch.compile`` (the first batches of each shape are slow)."""

    stage_max_attempts: int = 5
    """Attempts per stage before the job fails (a worker killed mid-stage counts as one)."""

    stage_lease_seconds: float = 60.0
    """How long a running stage's lease lasts without a heartbeat (sent every quarter of it).
    A killed worker's stage is taken over by another within about this long."""

    stage_time_limit_seconds: float = 1800.0
    """Hard time limit per stage; the broker's visibility timeout is set above it."""

    broker_visibility_timeout_seconds: float | None = None
    """Redis redelivers an unacked message after this; default twice the stage time limit."""

    sweep_interval_seconds: float = 2.0
    """How often each worker's sweeper relays the outbox and looks for lost stages (0: never)."""

    relay_grace_seconds: float = 2.0
    """Outbox messages younger than this are left to the fast path that wrote them."""

    requeue_after_seconds: float | None = None
    """A queued stage whose message was sent this long ago and never claimed, while its queue in
    the broker is empty, is sent again (its message was lost with a broker restart); default:
    the stage lease. A stage waiting behind others in a queue is never re-sent."""

    stall_after_seconds: float = 60.0
    """A worker idle this long while its queues hold messages restarts itself (0: never);
    works around Celery workers that stop consuming after a Redis reconnect."""

    worker_soft_shutdown_seconds: float = 0.0
    """On SIGTERM, how long a worker lets running stages go on before handing them back
    (0: let them finish, Celery's plain warm shutdown)."""

    broker_polling_interval: float = 0.2
    """Seconds between polls for brokers that poll (the embedded SQL broker)."""

    @property
    def resolved_requeue_after_seconds(self) -> float:
        if self.requeue_after_seconds is not None:
            return self.requeue_after_seconds
        return self.stage_lease_seconds

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
    def default_model(self) -> str:
        return self.model or BUILTIN_SHAPES

    @property
    def resolved_redis_url(self) -> str | None:
        if self.redis_url:
            return self.redis_url
        broker = self.resolved_broker_url
        return broker if broker.startswith(("redis://", "rediss://")) else None

    def expand_words(self) -> list[str] | None:
        if self.expand_words_file is None:
            return None
        lines = self.expand_words_file.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]

    def model_path(self, model_id: str) -> str:
        """Where the weights of ``model_id`` live: a path as given, a bare name under models_dir."""
        if "/" in model_id or model_id.startswith("."):
            return model_id
        return str(self.resolved_models_dir / model_id)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
