"""Benchmarks must not rot: run them small (the GPU one on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model", ["sd15", "sdxl"])
def test_gpu_script_runs_on_the_cpu_and_both_paths_draw_the_same_images(model: str) -> None:
    command = [
        sys.executable,
        "-m",
        "bench.gpu",
        "--device",
        "cpu",
        "--tiny",
        "--model",
        model,
        "--steps",
        "2",
        "--batches",
        "1,2",
        "--dtypes",
        "fp32",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| fp32")]
    assert len(rows) == 4
    # The same images (SDXL: up to one level of 255, where a batch of two rounds differently).
    diffs = {row.rstrip(" |").rsplit("|", 1)[1].strip() for row in rows}
    assert diffs <= ({"0"} if model == "sd15" else {"0", "1"}), rows


# Four worker processes in turn: the subprocess's own time-out is the bound.
@pytest.mark.timeout(600)
def test_quality_bench_runs_all_three_tables_on_a_few_scenes() -> None:
    command = [
        *(sys.executable, "-m", "bench.quality", "--scenes", "2", "--steps", "2,4"),
        *("--queue-steps", "4"),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    labels = [row.split("|")[1].strip() for row in rows]
    # Header rows, then: two step counts, cache off/on, mapping off/by table and embedder.
    known = {"2", "4", "off", "on", "table + embedder"}
    assert [label for label in labels if label in known] == [
        "2",
        "4",
        "off",
        "on",
        "off",
        "table + embedder",
    ]
    assert all(row.count("%") == 4 for row in rows if row.split("|")[1].strip() in {"2", "4"})


def test_bookkeeping_bench_times_claim_commit_and_publish() -> None:
    command = [sys.executable, "-m", "bench.throughput", "--quick", "--only", "bookkeeping"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    header = result.stdout.splitlines().index(
        "| claim ms | commit ms | publish ms | all five stages, per job ms |"
    )
    row = result.stdout.splitlines()[header + 2]
    claim, commit, publish, per_job = (float(cell) for cell in row.strip("| ").split(" | "))
    assert min(claim, commit, publish) > 0
    # Five claims and commits and four publishes make up a job.
    assert per_job >= 4 * (claim + commit + publish) * 0.5


def test_the_overhead_benchs_interval_for_the_median_covers_it_95_percent_of_the_time() -> None:
    from math import comb

    from bench.common import median_interval

    for n in (10, 20, 30, 60, 120):
        ranks = list(range(1, n + 1))  # the interval's ends, as 1-based ranks
        low, high = (int(end) for end in median_interval([float(r) for r in ranks]))
        # The median lies in [x_low, x_high] unless fewer than ``low`` or at least ``high``
        # observations fall below it; that count is binomial(n, 1/2).
        coverage = sum(comb(n, below) for below in range(low, high)) / 2**n
        assert coverage >= 0.95, (n, low, high, coverage)  # at least what it says
        assert n < 20 or coverage < 0.99, (n, low, high, coverage)  # and not much wider


@pytest.mark.timeout(600)
def test_language_bench_runs_its_tables_without_a_language_model(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.language", "--quick"]
    env = {**os.environ, "IMGGEN_HOME": str(tmp_path)}  # a models folder without SmolLM2
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line[:2] == "| "]
    assert "table + embedder" in rows and "language model alone" not in rows
    canonical = [line for line in result.stdout.splitlines() if line.startswith(("| off", "| on"))]
    # 2 scenes x 3 paraphrases, same seed: only canonical prompts make them hit the cache.
    off, on = (int(row.split("|")[3]) for row in canonical)
    assert (off, len(canonical)) == (0, 2) and on >= 2, canonical
