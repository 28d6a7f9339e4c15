"""The whole study: every seed, then the aggregate, the curves and the written report."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import datasets
from tqdm.auto import tqdm

from ..testbed import EmotionWorld
from ..utils.saving import atomic_write_text
from .config import POLICY_METHODS, RewardHackingStudyConfig
from .presets import preset_names
from .report import plot_curves, plot_overoptimisation, render_report
from .stages import print_flushed, run_seed, train_multitask_reward_model
from .statistics import aggregate


def run_study(cfg: RewardHackingStudyConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every seed, aggregate, write ``results.json``, ``report.md`` and the curve PNGs to ``cfg.output_dir``.

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
    output_dir.mkdir(parents=True, exist_ok=True)

    per_seed = []
    multitask_rm_scores = None
    progress_bars_were_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # dozens of tiny map/filter calls per seed
    try:
        with tempfile.TemporaryDirectory() as workdir:
            multitask_rm = None
            if any(POLICY_METHODS[method].needs_multitask_rm for method, _ in cfg.policy_rows().values()):
                log("multi-task reward model (ASR and quality heads), shared by every seed")
                multitask_rm, multitask_rm_scores = train_multitask_reward_model(
                    cfg, EmotionWorld(cfg.testbed_config()), f"{workdir}/multitask_rm"
                )
            for seed in tqdm(cfg.seeds, desc="reward-hacking study (seeds)"):
                per_seed.append(run_seed(cfg, seed, f"{workdir}/seed{seed}", log, multitask_rm=multitask_rm))
    finally:
        if progress_bars_were_enabled:
            datasets.enable_progress_bars()
    summary = aggregate(cfg, per_seed)
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
    }
    atomic_write_text(output_dir / "results.json", json.dumps(results, indent=2, default=float))
    report = render_report(cfg, summary, plots, wall_time, world=world)
    atomic_write_text(output_dir / "report.md", report)
    return {**results, "report": report, "plots": plots}


__all__ = ["run_study"]
