"""The study's seeds in parallel processes (`num_workers`) give the numbers of the one-after-the-other run."""

import json

import pytest
from test_study_presets import TINY  # the tiny study's sizes

from rrpo_hf.study import RewardHackingStudyConfig, run_study
from rrpo_hf.study.pipeline import _worker_count


def test_worker_count_is_capped_by_the_seeds_and_zero_means_every_core(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert _worker_count(RewardHackingStudyConfig(seeds=[0, 1, 2], num_workers=0)) == 3
    assert _worker_count(RewardHackingStudyConfig(seeds=list(range(8)), num_workers=0)) == 4
    assert _worker_count(RewardHackingStudyConfig(seeds=[0, 1], num_workers=5)) == 2
    assert _worker_count(RewardHackingStudyConfig(seeds=[0, 1], num_workers=1)) == 1
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        RewardHackingStudyConfig(num_workers=-1)


@pytest.mark.slow
def test_seeds_in_two_processes_reproduce_the_sequential_run(tmp_path):
    def study(name, workers):
        config = RewardHackingStudyConfig(
            **{**TINY, "seeds": [0, 1], "num_workers": workers, "output_dir": str(tmp_path / name)},
            rm_variants=["base", "clean"],
            policy_methods=["DiffRO", "DiffRO-clean"],
            beta_sweep=[],
        )
        run_study(config, log=lambda message: None)
        results = json.loads((tmp_path / name / "results.json").read_text())
        for seed in results["per_seed"]:
            seed.pop("timings_s")
        return results

    sequential, parallel = study("sequential", 1), study("parallel", 2)
    assert parallel["per_seed"] == sequential["per_seed"]
    assert parallel["summary"] == sequential["summary"]
