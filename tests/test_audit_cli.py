"""examples/audit_rm.py on folders saved by examples/train_rm.py: an emotion RM and a multi-task RM."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


# End to end: two train_rm.py runs (~30 s on one core) and the script; CI runs them.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY_RM = [
    "--testbed_num_train",
    "48",
    "--testbed_num_test",
    "16",
    "--hidden_size",
    "32",
    "--num_hidden_layers",
    "1",
    "--intermediate_size",
    "64",
    "--per_device_train_batch_size",
    "16",
    "--num_train_epochs",
    "1",
    "--report_to",
    "none",
]
SMALL_AUDIT = ["--num_utterances", "4", "--edit_budget", "2", "--num_candidates", "4", "--gumbel_steps", "3"]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_audit_test", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A train_rm.py emotion RM (the +Adv recipe: adversarial training saved in its config), a train_rm.py multi-task
    RM with an emotion head, and testbed test speech as a `save_to_disk` folder (with an intensity column) and as
    JSONL."""
    from datasets import concatenate_datasets

    from rrpo_hf.testbed import make_emotion_corpus

    root = tmp_path_factory.mktemp("audit")
    train_rm = load_script("train_rm")
    for folder, extra in (("rm", []), ("multitask", ["--tasks", "emotion,asr,quality"])):
        train_rm.main(
            *train_rm.make_parser().parse_args_and_config([*TINY_RM, *extra, "--output_dir", str(root / folder)])
        )
    parts = [make_emotion_corpus("alpha", 0, 24, seed=5, intensity=intensity)["test"] for intensity in (0.0, 0.5, 2.0)]
    data = concatenate_datasets(parts)
    data.save_to_disk(str(root / "data"))
    names = data.features["emotion"].names
    with open(root / "data.jsonl", "w") as handle:
        for row in data:
            handle.write(json.dumps({"speech_tokens": row["speech_tokens"], "emotion": names[row["emotion"]]}) + "\n")
    return root


def test_audit_rm_on_train_rm_folders(workspace, tmp_path):
    script = load_script("audit_rm")
    rm, multitask = str(workspace / "rm"), str(workspace / "multitask")
    argv = ["--reward_model", rm, multitask, "--dataset_name", str(workspace / "data"), *SMALL_AUDIT]
    result = script.main(*script.make_parser().parse_args_and_config([*argv, "--output_dir", str(tmp_path)]))
    saved = json.loads((tmp_path / "audit.json").read_text())
    assert (
        [row["reward_model"] for row in saved["models"]]
        == [rm, multitask]
        == [row["reward_model"] for row in result["models"]]
    )
    for row in saved["models"]:
        for key in ("gain_per_edit", "artifact_edit_share", "fgm_gain", "adv_epsilon_over_hidden_norm", "gumbel_gain"):
            assert key in row
        assert row["num_utterances"] == 4 and len(row["gain_curve"]) == 3
        assert [p["intensity"] for p in row["intensity_curve"]] == [0.0, 0.5, 2.0]
    # train_rm.py's defaults are the +Adv recipe: the audit reads ε_adv and α from the saved config.
    emotion_rm = saved["models"][0]
    assert emotion_rm["loss_adv_alpha"] == 0.5 and emotion_rm["loss_adv_epsilon"] == 0.5
    assert emotion_rm["adv_epsilon_over_hidden_norm"] == pytest.approx(
        0.5 / emotion_rm["hidden_norm_utterance"], rel=0.2
    )
    table = (tmp_path / "audit.md").read_text()
    assert rm in table and multitask in table and "ε_adv/‖h'‖" in table
    assert (tmp_path / "audit_gain_curve.png").stat().st_size > 0
    assert (tmp_path / "audit_intensity.png").stat().st_size > 0
    # The same seed gives the same figures; an existing output is not overwritten by default.
    again = script.main(
        *script.make_parser().parse_args_and_config([*argv, "--output_dir", str(tmp_path), "--overwrite_output_dir"])
    )
    assert again["models"] == result["models"]
    with pytest.raises(SystemExit, match="already holds"):
        script.main(*script.make_parser().parse_args_and_config([*argv, "--output_dir", str(tmp_path)]))


def test_audit_rm_reads_jsonl_and_names_bad_inputs(workspace, tmp_path):
    script = load_script("audit_rm")
    argv = ["--reward_model", str(workspace / "rm"), "--dataset_name", str(workspace / "data.jsonl"), *SMALL_AUDIT]
    result = script.main(*script.make_parser().parse_args_and_config([*argv, "--output_dir", str(tmp_path / "a")]))
    assert result["models"][0]["intensity_curve"] == []  # no intensity column in the JSONL
    with pytest.raises(SystemExit, match="no label for the target emotion 'bored'"):
        script.main(
            *script.make_parser().parse_args_and_config(
                [*argv, "--output_dir", str(tmp_path / "b"), "--target_emotion", "bored"]
            )
        )
    with pytest.raises(SystemExit, match="does not load as an emotion reward model"):
        script.main(
            *script.make_parser().parse_args_and_config(
                [
                    "--reward_model",
                    str(tmp_path),
                    "--dataset_name",
                    str(workspace / "data"),
                    "--output_dir",
                    str(tmp_path / "c"),
                ]
            )
        )


def test_the_script_runs_as_a_command(workspace, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "audit_rm.py"),
            "--reward_model",
            str(workspace / "rm"),
            "--dataset_name",
            str(workspace / "data"),
            "--output_dir",
            str(tmp_path),
            *SMALL_AUDIT,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Gumbel Δlog P" in completed.stdout and (tmp_path / "audit.json").exists()
