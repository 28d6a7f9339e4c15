"""trackio as a `report_to` choice, end to end and offline: the metrics (TRL's names) and the completion tables of
two DiffRO steps and an evaluation, read back from trackio's local store."""

import json
import os
import subprocess
import sys

import pytest


pytest.importorskip("trackio")
REPO = os.path.join(os.path.dirname(__file__), "..")


@pytest.mark.slow
def test_trackio_stores_the_metrics_and_the_completion_tables(tmp_path):
    env = {
        **os.environ,
        "TRACKIO_DIR": str(tmp_path / "trackio"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([os.path.abspath(REPO), os.path.join(os.path.abspath(REPO), "tests")]),
    }
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "scripts", "diffro_trackio.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("TRACKIO_LOGS "))
    logs = json.loads(line.removeprefix("TRACKIO_LOGS "))
    train = [entry for entry in logs if "train/loss" in entry]
    assert [entry["train/global_step"] for entry in train] == [1, 2]
    for entry in train:
        assert {"train/reward", "train/reward_std", "train/rewards/emotion/mean", "train/rewards/emotion/std"} <= set(
            entry
        )
        assert entry["train/rewards/emotion/mean"] == pytest.approx(entry["train/reward"])
    assert any("eval/rewards/emotion/mean" in entry for entry in logs)
    tables = [entry["completions"] for entry in logs if "completions" in entry]
    assert [table["_type"] for table in tables] == ["trackio.table"] * 2
    for table, entry in zip(tables, train):
        rows = table["_value"]
        assert len(rows) == 4 and {row["step"] for row in rows} == {entry["train/global_step"]}
        assert {"prompt", "target_emotion", "completion", "completion_length", "emotion", "reward"} <= set(rows[0])
        mean = sum(row["emotion"] for row in rows) / len(rows)
        assert mean == pytest.approx(entry["train/rewards/emotion/mean"], rel=1e-5)
    (eval_table,) = [entry["eval_completions"]["_value"] for entry in logs if "eval_completions" in entry]
    assert len(eval_table) == 4
