"""`resume`: a study reuses the seeds a run of the same settings saved, runs the others, and ends where an
uninterrupted run ends; a seed saved by other settings is refused before anything runs."""

import json

import pytest
from test_study_presets import TINY  # the tiny study's sizes

import rrpo_hf.study.pipeline as pipeline
from rrpo_hf.study import RewardHackingStudyConfig, run_study


ROWS = dict(rm_variants=["base"], policy_methods=["DiffRO"], beta_sweep=[], num_workers=1)


def results_without_times(path):
    results = json.loads((path / "results.json").read_text())
    for seed in results["per_seed"]:
        seed.pop("timings_s")
    results.pop("stage_times_s")
    results.pop("wall_time_s")
    results["config"].pop("output_dir")
    results["config"].pop("resume")
    return results


@pytest.fixture
def seeds_run(monkeypatch):
    ran = []
    run_seed = pipeline.run_seed

    def spy(cfg, seed, *args, **kwargs):
        ran.append(seed)
        return run_seed(cfg, seed, *args, **kwargs)

    monkeypatch.setattr(pipeline, "run_seed", spy)
    return ran


@pytest.mark.slow
def test_a_resumed_study_runs_only_the_missing_seeds_and_ends_as_an_uninterrupted_one(tmp_path, seeds_run):
    def config(name, seeds, **overrides):
        return RewardHackingStudyConfig(
            **{**TINY, **ROWS, "seeds": seeds, "output_dir": str(tmp_path / name), **overrides}
        )

    run_study(config("resumed", [0]), log=lambda message: None)
    saved = json.loads((tmp_path / "resumed" / "seeds" / "seed0.json").read_text())
    assert saved["study_settings"] == json.loads(json.dumps(config("x", [0]).seed_settings()))
    seeds_run.clear()
    run_study(config("resumed", [0, 1], resume=True), log=lambda message: None)
    assert seeds_run == [1]
    run_study(config("whole", [0, 1]), log=lambda message: None)
    assert results_without_times(tmp_path / "resumed") == results_without_times(tmp_path / "whole")

    # A saved seed of other settings is refused, naming what differs, before any seed runs.
    seeds_run.clear()
    with pytest.raises(ValueError, match=r"seed1\.json was saved by a study with other settings \(policy_steps\)"):
        run_study(config("resumed", [1, 3], resume=True, policy_steps=3), log=lambda message: None)
    assert seeds_run == []
