"""The whole study: every seed, then the aggregate, the curves and the written report."""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import datasets
import torch

from ..testbed import EmotionWorld
from ..utils.processes import run_in_processes
from ..utils.saving import atomic_write_text
from .config import POLICY_METHODS, RewardHackingStudyConfig
from .gate import decide_gate
from .presets import preset_names
from .report import plot_curves, plot_overoptimisation, render_gate_report, render_report
from .stages import print_flushed, run_gate_seed, run_seed, stage_times, train_multitask_reward_model
from .statistics import aggregate


def _worker_count(cfg: RewardHackingStudyConfig) -> int:
    """Processes for the seeds: `num_workers`, or with 0 one per CPU core; never more than there are seeds."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cfg.num_workers or cores, len(cfg.seeds)))


def _seed_in_worker(cfg: RewardHackingStudyConfig, seed: int, workdir: str, multitask_rm, trained) -> dict:
    torch.set_num_threads(cfg.threads_per_seed)
    datasets.disable_progress_bars()
    trained = {variant: (_model_from_bytes(model), table2) for variant, (model, table2) in (trained or {}).items()}
    return run_seed(
        cfg, seed, f"{workdir}/seed{seed}", print_flushed, multitask_rm=multitask_rm, trained_reward_models=trained
    )


def _gate_in_worker(cfg: RewardHackingStudyConfig, seed: int, workdir: str) -> dict:
    torch.set_num_threads(cfg.threads_per_seed)
    datasets.disable_progress_bars()
    result = run_gate_seed(cfg, seed, f"{workdir}/seed{seed}", print_flushed)
    # A tensor sent back through the pipe would be shared memory owned by this process, gone when it exits: send bytes.
    model, table2 = result["base"]
    return {**result, "base": (_model_bytes(model), table2)}


def _model_bytes(model) -> bytes:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def _model_from_bytes(data):
    return torch.load(io.BytesIO(data), weights_only=False) if isinstance(data, bytes) else data


def run_gate(cfg: RewardHackingStudyConfig, workdir: str, log: Callable[[str], None]) -> tuple[dict, dict, dict]:
    """The mechanism gate on every seed's vanilla RM (`workers` at a time), before anything else of the study is
    built. Returns the verdict (:func:`~rrpo_hf.study.gate.decide_gate` plus each seed's figures), the base RM of
    each seed (seed -> (model, Table 2 scores)) for `run_seed` to reuse, and each seed's seconds (wall-clock, so
    apart from the verdict, which repeats exactly)."""
    workers = _worker_count(cfg)
    log(f"mechanism gate on the vanilla RM of {len(cfg.seeds)} seed(s), {workers} at a time")
    if workers == 1:
        runs = {seed: run_gate_seed(cfg, seed, f"{workdir}/seed{seed}", log) for seed in cfg.seeds}
    else:
        runs = run_in_processes(_gate_in_worker, [(seed, (cfg, seed, workdir)) for seed in cfg.seeds], workers)
    base_models = {seed: (_model_from_bytes(runs[seed]["base"][0]), runs[seed]["base"][1]) for seed in cfg.seeds}
    figures = [runs[seed]["gate"] for seed in cfg.seeds]
    verdict = {
        **decide_gate(cfg.gate(), figures),
        "thresholds": cfg.gate().to_dict(),
        "per_seed": {seed: runs[seed]["gate"] for seed in cfg.seeds},
    }
    seconds = {seed: runs[seed]["seconds"] for seed in cfg.seeds}
    log(
        f"mechanism gate {'PASSED' if verdict['passed'] else 'FAILED: mechanism absent'} "
        f"({sum(seconds.values()) / len(seconds):.0f} s per seed)"
    )
    return verdict, base_models, seconds


def seed_result_path(output_dir: str | os.PathLike, seed: int) -> Path:
    """Where a finished seed's results are written as soon as it finishes (`<output_dir>/seeds/seed<N>.json`)."""
    return Path(output_dir) / "seeds" / f"seed{seed}.json"


def _save_seed(output_dir: Path, seed: int, result: dict, settings: dict) -> None:
    payload = {**result, "study_settings": settings}
    atomic_write_text(seed_result_path(output_dir, seed), json.dumps(payload, indent=2, default=float))


def load_saved_seeds(cfg: RewardHackingStudyConfig) -> dict[int, dict]:
    """The seeds of `cfg.seeds` already saved in `output_dir/seeds/` by a run of the same settings (`resume`).

    A seed file written by other settings, or by a version that did not record them, raises a `ValueError` that names
    the file and the fields that differ, before anything runs."""
    settings = json.loads(json.dumps(cfg.seed_settings(), default=float))  # as the file holds them
    saved = {}
    for seed in cfg.seeds:
        path = seed_result_path(cfg.output_dir, seed)
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        theirs = result.pop("study_settings", None) or {}
        if theirs != settings:
            differing = sorted(k for k in set(settings) | set(theirs) if theirs.get(k) != settings.get(k))
            raise ValueError(
                f"{path} was saved by a study with other settings ({', '.join(differing[:8]) or 'none recorded'}); "
                "resume only reuses seeds of the same study. Use another output_dir, or move the file away."
            )
        saved[seed] = result
    return saved


def _run_seeds_in_processes(
    cfg: RewardHackingStudyConfig,
    seeds: list[int],
    workers: int,
    workdir: str,
    multitask_rm,
    trained: dict[int, dict],
    on_result: Callable[[int, dict], None],
) -> list[dict]:
    """Each of `seeds` in a pool of `workers` fresh ("spawn") processes with `threads_per_seed` threads each; the
    results in the order of `seeds`. A seed seeds everything it draws, so its result is the one a sequential run gives.
    Ctrl-C or SIGTERM stops every worker within seconds (`run_in_processes`); finished seeds are on disk already."""
    results = run_in_processes(
        _seed_in_worker,
        [(seed, (cfg, seed, workdir, multitask_rm, trained.get(seed))) for seed in seeds],
        workers,
        on_result=on_result,
    )
    return [results[seed] for seed in seeds]


def mean_stage_times(per_seed: list[dict]) -> dict[str, float]:
    """Seconds per seed by kind of stage (:func:`~rrpo_hf.study.stages.stage_times`), mean over the seeds."""
    per_kind: dict[str, list[float]] = {}
    for run in per_seed:
        for kind, seconds in stage_times(run.get("timings_s", {})).items():
            per_kind.setdefault(kind, []).append(seconds)
    return {kind: sum(values) / len(values) for kind, values in per_kind.items()}


def run_study(cfg: RewardHackingStudyConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every seed, aggregate, write ``results.json``, ``report.md`` and the curve PNGs to ``cfg.output_dir``.

    Each seed's results are written to ``seeds/seed<N>.json`` as it finishes, so Ctrl-C or SIGTERM (which stop every
    worker process within seconds) keep the finished seeds. Every training stage logs its progress (steps, epochs).

    ``results.json`` holds the study config and, under ``"world"``, every parameter of the testbed world the seeds
    were drawn in (the resolved `TestbedConfig`, languages included), so that a run can be reproduced or another
    world drawn from the file alone.
    """
    log = log or print_flushed
    if len(preset_names(cfg.preset)) > 1:
        raise ValueError(
            f"preset {cfg.preset!r} names several studies; run one per preset "
            "(`RewardHackingStudyConfig.from_preset(name)` for each name of STUDY_PRESETS), as the example scripts do."
        )
    try:
        import matplotlib  # noqa: F401  (checked now: the curves are drawn after minutes of training)
    except ImportError as error:
        raise ImportError("The study draws its curves with matplotlib: pip install 'rrpo-hf[plots]'.") from error
    start = time.perf_counter()
    output_dir = Path(cfg.output_dir)
    saved = load_saved_seeds(cfg) if cfg.resume else {}
    to_run = [seed for seed in cfg.seeds if seed not in saved]
    output_dir.mkdir(parents=True, exist_ok=True)

    per_seed = []
    multitask_rm_scores, gate, gate_seconds = None, None, None
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads_per_seed)  # see its help: the thread count is part of the result
    progress_bars_were_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # dozens of tiny map/filter calls per seed
    try:
        with tempfile.TemporaryDirectory() as workdir:
            trained: dict[int, dict] = {}
            if cfg.gate() is not None:
                # The gate reads the vanilla RM alone: nothing robust is trained and no policy optimised before it.
                gate, base_models, gate_seconds = run_gate(cfg, workdir, log)
                if not gate["passed"]:
                    return _write_gate_only(cfg, gate, gate_seconds, output_dir, time.perf_counter() - start)
                trained = {seed: {"base": base_models[seed]} for seed in cfg.seeds}
            multitask_rm = None
            if any(POLICY_METHODS[method].needs_multitask_rm for method, _ in cfg.policy_rows().values()):
                log("multi-task reward model (ASR and quality heads), shared by every seed")
                multitask_rm, multitask_rm_scores = train_multitask_reward_model(
                    cfg, EmotionWorld(cfg.testbed_config()), f"{workdir}/multitask_rm"
                )
            workers = _worker_count(cfg)
            done: list[int] = list(saved)
            if saved:
                log(f"resume: seeds {sorted(saved)} read from {output_dir / 'seeds'}; running {to_run}")

            def on_result(seed: int, result: dict) -> None:
                # Each seed is saved when it finishes: an interrupted study keeps what it has computed.
                _save_seed(output_dir, seed, result, cfg.seed_settings())
                done.append(seed)
                log(f"seed {seed} done ({len(done)}/{len(cfg.seeds)}): {seed_result_path(output_dir, seed)}")

            log(f"{len(to_run)} seed(s), {workers} at a time; each stage reports its steps as it trains")
            if workers == 1:
                for seed in to_run:
                    per_seed.append(
                        run_seed(
                            cfg,
                            seed,
                            f"{workdir}/seed{seed}",
                            log,
                            multitask_rm=multitask_rm,
                            trained_reward_models=trained.get(seed),
                        )
                    )
                    on_result(seed, per_seed[-1])
            elif to_run:
                per_seed = _run_seeds_in_processes(cfg, to_run, workers, workdir, multitask_rm, trained, on_result)
            computed = dict(zip(to_run, per_seed))
            per_seed = [saved[seed] if seed in saved else computed[seed] for seed in cfg.seeds]
    finally:
        torch.set_num_threads(threads_before)
        if progress_bars_were_enabled:
            datasets.enable_progress_bars()
    summary = aggregate(cfg, per_seed)
    if gate is not None:
        summary["gate"] = gate
    if multitask_rm_scores is not None:
        summary["multitask_rm"] = multitask_rm_scores
    rows = list(cfg.policy_rows())
    plots = plot_curves(per_seed, rows, output_dir)
    plots.append(plot_overoptimisation(per_seed, rows, output_dir))
    wall_time = time.perf_counter() - start
    world = asdict(cfg.testbed_config())  # the world `run_seed` built for every seed
    results = {
        "config": cfg.to_dict(),
        "world": world,
        "oracle": asdict(cfg.oracle_config()),
        "summary": summary,
        "per_seed": per_seed,
        "wall_time_s": wall_time,
        # Wall-clock, so kept out of the summary, which repeats exactly for the same seeds.
        "stage_times_s": mean_stage_times(per_seed),
        **({"gate_seconds_s": gate_seconds} if gate_seconds is not None else {}),
    }
    atomic_write_text(output_dir / "results.json", json.dumps(results, indent=2, default=float))
    report = render_report(cfg, summary, plots, wall_time, world=world, stage_times=results["stage_times_s"])
    atomic_write_text(output_dir / "report.md", report)
    return {**results, "report": report, "plots": plots}


def _write_gate_only(
    cfg: RewardHackingStudyConfig, gate: dict, gate_seconds: dict, output_dir: Path, wall_time: float
) -> dict[str, Any]:
    """The study of a failed gate: results.json and a report that says "mechanism absent" (no robust RM or policy
    was built, and the world is not to be re-tuned until it passes)."""
    world = asdict(cfg.testbed_config())
    results = {
        "config": cfg.to_dict(),
        "world": world,
        "oracle": asdict(cfg.oracle_config()),
        "summary": {"gate": gate},
        "per_seed": [],
        "wall_time_s": wall_time,
        "gate_seconds_s": gate_seconds,
    }
    atomic_write_text(output_dir / "results.json", json.dumps(results, indent=2, default=float))
    report = render_gate_report(cfg, gate, wall_time, world=world)
    atomic_write_text(output_dir / "report.md", report)
    return {**results, "report": report, "plots": []}


__all__ = ["load_saved_seeds", "run_gate", "run_study", "seed_result_path"]
