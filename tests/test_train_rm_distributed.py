"""End-to-end `accelerate launch examples/train_rm.py` with 2 CPU processes (DDP and DeepSpeed ZeRO-2/3, gloo).

One launched script for every configuration: the example itself, with a tiny model and corpus. It records
`trainer.accelerator.num_processes` in `run_results.json`; a wrong set-up (no gloo backend) trains silently on
one process per rank, which this catches.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "tests" / "accelerate_configs"


def launch(tmp_path, config_name, extra_args=()):
    output_dir = tmp_path / config_name
    env = dict(os.environ)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(CONFIGS / f"{config_name}.yaml"),
        str(REPO / "examples" / "train_rm.py"),
        "--output_dir", str(output_dir),
        "--testbed_num_train", "192", "--testbed_num_test", "64",
        "--hidden_size", "32", "--intermediate_size", "64",
        "--num_train_epochs", "1", "--per_device_train_batch_size", "16",
        "--logging_steps", "2", "--disable_tqdm", "true",
        *extra_args,
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    print(f"{config_name}: {elapsed:.1f} s")
    return output_dir, result.stdout


def check_run(output_dir, stdout, distributed_type):
    run = json.loads((output_dir / "run_results.json").read_text())
    assert run["num_processes"] == 2
    assert run["distributed_type"].endswith(distributed_type)
    # 192 samples / (2 processes x 16 per device) = 6 optimizer steps: each process saw its half of every batch
    assert run["global_step"] == 6
    evaluation = json.loads((output_dir / "eval_results.json").read_text())
    # predictions are gathered across both processes: every test utterance is scored exactly once
    assert evaluation["eval_alpha_num_samples"] == 64 and evaluation["eval_beta_num_samples"] == 64
    assert "| alpha |" in stdout and "| beta |" in stdout
    card = (output_dir / "README.md").read_text()
    assert "reward-model" in card and "| beta |" in card
    return load_file(str(output_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def ddp_weights(tmp_path_factory):
    output_dir, stdout = launch(tmp_path_factory.mktemp("ddp"), "cpu_ddp")
    weights = check_run(output_dir, stdout, "MULTI_CPU")
    from rrpo_hf.models.robust_ser import RobustSERForAudioClassification

    model = RobustSERForAudioClassification.from_pretrained(output_dir)
    assert model.config.adv_alpha == 0.5 and model.config.hidden_size == 32
    return weights


@pytest.mark.slow
def test_ddp_two_processes(ddp_weights):
    assert all(torch.isfinite(tensor).all() for tensor in ddp_weights.values())


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["cpu_zero2", "cpu_zero3"])
def test_deepspeed_two_processes_matches_ddp(tmp_path, ddp_weights, config_name):
    """Same seed, data and EAM plans: ZeRO-2/3 must end at DDP's weights. Under ZeRO-3 this also shows that the
    adversarial gradient d L_emo / d h' and the saved (gathered) weights are right."""
    output_dir, stdout = launch(tmp_path, config_name)
    weights = check_run(output_dir, stdout, "DEEPSPEED")
    assert weights.keys() == ddp_weights.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, ddp_weights[name], rtol=0, atol=2e-4, msg=name)


@pytest.mark.slow
def test_deepspeed_resume_matches_the_uninterrupted_run(tmp_path):
    """ZeRO-2 skips `Trainer._load_from_checkpoint`; the EAM plan stream must still come back from the checkpoint,
    so a run stopped at step 2 and resumed ends at the uninterrupted run's weights."""
    # A constant learning rate: the interrupted run (max_steps 2) must train its two steps as the full run does.
    schedule = [
        "--lr_scheduler_type",
        "constant",
        "--warmup_steps",
        "0",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
    ]
    (tmp_path / "full").mkdir()
    (tmp_path / "resumed").mkdir()
    full_dir, _ = launch(tmp_path / "full", "cpu_zero2", [*schedule, "--max_steps", "4"])
    launch(tmp_path / "resumed", "cpu_zero2", [*schedule, "--max_steps", "2"])
    resumed_dir, stdout = launch(
        tmp_path / "resumed", "cpu_zero2", [*schedule, "--max_steps", "4", "--resume_from_checkpoint", "true"]
    )
    assert "not found" not in stdout
    for rank in (0, 1):
        assert (resumed_dir / "checkpoint-2" / f"eam_rng_state_{rank}.pth").is_file()
    full, resumed = load_file(str(full_dir / "model.safetensors")), load_file(str(resumed_dir / "model.safetensors"))
    assert full.keys() == resumed.keys()
    for name, tensor in full.items():
        assert torch.equal(resumed[name], tensor), name
