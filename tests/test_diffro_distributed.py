"""`DiffROTrainer` under `accelerate launch` with 2 CPU processes: DDP, DeepSpeed ZeRO-2 and ZeRO-3.

One launch per backend trains offline then online rollouts (online under ZeRO-3 generates with gathered
parameters); the DDP and ZeRO-3 launches also check that resuming from a checkpoint reproduces the uninterrupted
run. The
checks themselves run inside the launched script (`tests/scripts/diffro_smoke.py`): process count, finite loss,
frozen and unwrapped reward model, identical parameters on both ranks, resume continuation.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "scripts" / "diffro_smoke.py"
CONFIGS = REPO / "tests" / "accelerate_configs"


def free_port() -> int:
    # Other test files launch at the same time; the default port 29500 would collide.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(config: str, output_dir: Path, *script_args: str, script: Path = SCRIPT) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # DeepSpeed JIT-builds its CPU comm op once; a shared cache keeps later launches from rebuilding it.
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions")),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / config),
        "--main_process_port",
        str(free_port()),
        str(script),
        "--output_dir",
        str(output_dir),
        *script_args,
    ]
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert completed.returncode == 0, f"{config} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-6000:]}"
    return json.loads((output_dir / "summary.json").read_text())


MAX_NEW_TOKENS = 24  # the script's generation cap for online rollouts


def check_cases(summary: dict, expected_type: str, max_steps: int = 2):
    assert summary["distributed_type"] == expected_type
    assert list(summary["cases"]) == ["offline", "online"]
    for rollout, case in summary["cases"].items():
        assert case["num_processes"] == 2, rollout
        assert case["global_step"] == max_steps, rollout
        assert len(case["losses"]) == max_steps, rollout
        assert {"reward", "loss_emo", "loss_adv", "kl", "rm_accuracy", "entropy", "sample_length"} <= set(
            case["log_keys"]
        ), case["log_keys"]
        # Step 1 runs before any update, when the policy is its own reference; after one update it differs.
        assert case["kl"][0] == pytest.approx(0.0, abs=1e-6), (rollout, case["kl"])
        assert case["kl"][1] > 0, (rollout, case["kl"])
    # Online tokens come from the policy (capped), not from the dataset (18-85 tokens per utterance).
    assert all(1 <= length <= MAX_NEW_TOKENS for length in summary["cases"]["online"]["sample_length"])


@pytest.fixture(scope="module")
def ddp_summary(tmp_path_factory):
    return launch(
        "cpu_ddp.yaml", tmp_path_factory.mktemp("diffro_ddp"), "--rollouts", "offline,online", "--check_resume"
    )


@pytest.fixture(scope="module")
def zero3_summary(tmp_path_factory):
    # ZeRO-3 resumes through DeepSpeed's own (partitioned) checkpoint, a different path from DDP's.
    return launch(
        "cpu_zero3.yaml", tmp_path_factory.mktemp("diffro_z3"), "--rollouts", "offline,online", "--check_resume"
    )


@pytest.mark.slow
def test_diffro_ddp_offline_and_online(ddp_summary):
    check_cases(ddp_summary, "DistributedType.MULTI_CPU")


@pytest.mark.slow
def test_diffro_deepspeed_zero2_offline_and_online(tmp_path):
    check_cases(launch("cpu_zero2.yaml", tmp_path, "--rollouts", "offline,online"), "DistributedType.DEEPSPEED")


@pytest.mark.slow
def test_diffro_deepspeed_zero3_offline_and_online(zero3_summary):
    # Online rollouts under ZeRO-3 generate with the parameters gathered from both ranks' shards.
    check_cases(zero3_summary, "DistributedType.DEEPSPEED")


@pytest.mark.slow
@pytest.mark.parametrize("config", ["cpu_zero2.yaml", "cpu_zero3.yaml"])
def test_diffro_cosyvoice3_under_deepspeed(config, tmp_path):
    """A toy CosyVoice3 policy (v3 reward model) trains offline and online under ZeRO-2 and ZeRO-3, as the
    recipes/cosyvoice3-0.5b/ recipes run it; ZeRO-3 also resumes exactly."""
    extra = ["--check_resume"] if config == "cpu_zero3.yaml" else []
    summary = launch(config, tmp_path, "--rollouts", "offline,online", "--cosyvoice_version", "3", *extra)
    assert summary["policy_class"] == "CosyVoice3LM"
    check_cases(summary, "DistributedType.DEEPSPEED")
    if extra:
        resume = summary["resume"]
        assert resume["losses_after_resume"] == pytest.approx(resume["uninterrupted_losses"], rel=1e-5, abs=1e-6)
        assert resume["max_param_diff"] <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ddp", "zero3"])
def test_diffro_resume_matches_uninterrupted_run(backend, request):
    """Resuming the step-2 checkpoint to step 4 reproduces the uninterrupted 4-step run exactly.

    Exact because the checkpoint holds the optimizer and scheduler, the seeded sampler replays the same batches
    after the skipped ones, and every random stream of the step (Gumbel noise, rollouts) is restored per rank --
    so equal parameters (not just a plausible loss) are the right bar.
    """
    resume = request.getfixturevalue(f"{backend}_summary")["resume"]
    assert resume["resumed_global_step"] == 2 * resume["checkpoint_step"]
    assert len(resume["losses_after_resume"]) == resume["checkpoint_step"]
    assert resume["losses_after_resume"] == pytest.approx(resume["uninterrupted_losses"], rel=1e-5, abs=1e-6)
    assert resume["max_param_diff"] <= 1e-6


def save_models(folder: Path, codebook_size: int = 512) -> Path:
    """Policy (+ tokenizer), reward model, judge, a multi-task RM and a trained LoRA adapter as saved folders."""
    import torch

    from rrpo_hf.models.cosyvoice2 import CosyVoice2LM, CosyVoice2LMConfig
    from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
    from rrpo_hf.testbed import build_testbed_tokenizer

    tokenizer = build_testbed_tokenizer()
    torch.manual_seed(0)
    policy = CosyVoice2LM(
        CosyVoice2LMConfig(
            llm_config=dict(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=512,
            ),
            speech_token_size=codebook_size,
        )
    )
    policy.save_pretrained(folder / "policy")
    tokenizer.save_pretrained(folder / "policy")
    from peft import LoraConfig, get_peft_model

    adapter = get_peft_model(policy, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)  # "trained": the policy is no longer its base model
    adapter.save_pretrained(folder / "adapter")
    from rrpo_hf.models.robust_ser import RobustMultiTaskRMConfig, RobustSERForMultiTaskReward
    from rrpo_hf.testbed import asr_vocabulary

    torch.manual_seed(3)
    RobustSERForMultiTaskReward(
        RobustMultiTaskRMConfig(
            vocab_size=codebook_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
            tasks=["emotion", "asr", "quality"],
            asr_labels=asr_vocabulary(),
        )
    ).save_pretrained(folder / "multitask_rm")
    for seed, name in ((1, "reward_model"), (2, "judge")):
        torch.manual_seed(seed)
        RobustSERForAudioClassification(
            RobustSERConfig(
                vocab_size=codebook_size,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=512,
            )
        ).save_pretrained(folder / name)
    return folder


@pytest.mark.slow
def test_diffro_zero3_init_from_saved_folders_full_and_lora(tmp_path):
    """The recipe's ZeRO-3 (`zero3_init_flag: true`): every from_pretrained in the trainer runs inside zero.Init.

    Before, the reward model came out partitioned (shape (0,)) and the first step crashed. The launched script
    checks that the reward model and judge are full, frozen and unchanged, that the full fine-tuning reference is
    a sharded engine, that KL is 0 then > 0 and that the policy moves, for full and LoRA, offline and online. The
    last case adds the ASR and quality rewards of a saved multi-task RM folder, which must load whole on every rank.
    """
    models = save_models(tmp_path / "models")
    summary = launch(
        "cpu_zero3_init.yaml",
        tmp_path / "run",
        "--models_dir",
        str(models),
        script=REPO / "tests" / "scripts" / "diffro_zero3_paths.py",
    )
    # The last case passes the reward model as a module already partitioned by from_pretrained under zero.Init.
    # "adapter": a trained LoRA adapter given as a PeftModel, whose reference is its own frozen copy (KL 0 at step 1).
    assert list(summary) == [
        "full:offline",
        "full:online",
        "lora:offline",
        "lora:online",
        "adapter:offline",
        "full:offline:rm_module",
        "full:offline:asr",
    ]
    for case, result in summary.items():
        assert len(result["losses"]) == 2 and result["kl"][0] == pytest.approx(0.0, abs=1e-6), case
        assert result["kl"][1] > 0 and result["moved"] > 0, case
    assert summary["full:offline"]["eval_judge_accuracy"] is not None  # the judge scored evaluation samples
