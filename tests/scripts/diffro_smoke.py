"""Distributed smoke run of `DiffROTrainer`, launched by `tests/test_diffro_distributed.py`.

    accelerate launch --config_file tests/accelerate_configs/cpu_zero3.yaml \
        tests/scripts/diffro_smoke.py --output_dir /tmp/diffro --rollouts offline,online

Builds a toy CosyVoice2 policy (Qwen2 backbone, hidden 32, one layer) and a tiny robust reward model over the
testbed codebook, then trains the policy for a few steps with each requested rollout. Every check runs inside the
launched processes, because a wrong launch (ranks that each believe they are alone, a reward model swallowed by a
DeepSpeed engine) does not crash -- it silently trains something else. A failed check raises, so the launcher
exits non-zero; rank 0 writes `<output_dir>/summary.json` for the test to read.

`--check_resume` adds: train 2N steps saving at N (the uninterrupted run), then resume a fresh trainer from the
step-N checkpoint to 2N; the losses logged after step N and the final parameters of both runs go to the summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch

from rrpo_hf.data.prompts import instruction_words
from rrpo_hf.models.cosyvoice2 import CosyVoice2LM, CosyVoice2LMConfig
from rrpo_hf.models.cosyvoice3 import CosyVoice3LM, build_tiny_cosyvoice3_tokenizer, tiny_cosyvoice3_config
from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
from rrpo_hf.script_utils import end_distributed_run
from rrpo_hf.testbed import TestbedConfig, build_testbed_tokenizer, make_emotion_corpus
from rrpo_hf.trainers import DiffROConfig, DiffROTrainer


CODEBOOK_SIZE = 512  # the smallest codebook the testbed's two languages fit in


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--rollouts", default="offline,online", help="Comma-separated rollouts to train, in order.")
    parser.add_argument("--max_steps", type=int, default=2)
    parser.add_argument("--beta", type=float, default=0.1, help="> 0 also exercises the frozen reference policy.")
    parser.add_argument("--check_resume", action="store_true", help="Also check resuming from a checkpoint.")
    parser.add_argument("--expected_processes", type=int, default=2)
    parser.add_argument(
        "--cosyvoice_version", type=int, default=2, choices=[2, 3], help="3: a toy CosyVoice3 policy and a v3 RM."
    )
    return parser.parse_args()


def build_models(tokenizer, seed: int = 0, cosyvoice_version: int = 2):
    """Identical toy policy and reward model on every rank (same seed), as `from_pretrained` would give."""
    torch.manual_seed(seed)
    if cosyvoice_version == 3:
        policy = CosyVoice3LM(
            tiny_cosyvoice3_config(
                tokenizer,
                CODEBOOK_SIZE,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=512,
            )  # fmt: skip
        )
        reward_model = RobustSERForAudioClassification(
            RobustSERConfig(
                vocab_size=CODEBOOK_SIZE,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=512,
                speech_tokenizer_version="v3",
            )  # fmt: skip
        )
        return policy, reward_model
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
            speech_token_size=CODEBOOK_SIZE,
        )
    )
    reward_model = RobustSERForAudioClassification(
        RobustSERConfig(
            vocab_size=CODEBOOK_SIZE,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )
    )
    return policy, reward_model


def make_args(output_dir: str, rollout: str, cli, **overrides) -> DiffROConfig:
    kwargs = dict(
        output_dir=output_dir,
        rollout=rollout,
        beta=cli.beta,
        max_steps=cli.max_steps,
        per_device_train_batch_size=2,
        learning_rate=1e-3,  # large enough that every step visibly moves the toy policy
        logging_steps=1,
        max_new_tokens=24,  # online: keeps generation (and the ZeRO-3 parameter gather) short
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        ddp_backend="gloo",  # DeepSpeed on CPU needs it explicitly (docs/architecture.md)
        seed=0,
        data_seed=0,
    )
    kwargs.update(overrides)
    return DiffROConfig(**kwargs)


def full_state_dict(trainer) -> dict[str, torch.Tensor]:
    """The policy's full parameters on this rank (gathered from the ZeRO-3 shards when partitioned)."""
    policy = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    named = list(policy.named_parameters())
    if any(hasattr(param, "ds_id") for _, param in named):
        import deepspeed

        # Collective: every rank gathers (accelerate's get_state_dict would fill rank 0 only).
        with deepspeed.zero.GatheredParameters([param for _, param in named], modifier_rank=None):
            return {name: param.detach().float().cpu().clone() for name, param in named}
    return {name: param.detach().float().cpu().clone() for name, param in named}


def check_same_on_all_ranks(trainer, state: dict[str, torch.Tensor], what: str):
    """Data-parallel ranks train on different data but must hold the same parameters after each update."""
    flat = torch.cat([value.flatten() for value in state.values()]).to(trainer.accelerator.device)
    per_rank = trainer.accelerator.gather(flat).view(trainer.accelerator.num_processes, -1)
    max_gap = (per_rank - per_rank[0]).abs().max().item()
    if max_gap > 1e-6:
        raise AssertionError(
            f"{what}: the ranks' parameters differ by up to {max_gap:.3g}; gradients were not synced."
        )


def check_reward_model(trainer, reward_model, reward_snapshot, what: str):
    import deepspeed
    from torch.nn.parallel import DistributedDataParallel

    rm = trainer.reward_model
    if isinstance(rm, (deepspeed.DeepSpeedEngine, DistributedDataParallel)):
        raise AssertionError(
            f"{what}: the reward model was wrapped in {type(rm).__name__}; it must stay a plain module."
        )
    if rm is not reward_model:
        raise AssertionError(f"{what}: trainer.reward_model is a {type(rm).__name__}, not the given reward model.")
    if rm.training:
        raise AssertionError(f"{what}: the reward model is in training mode (dropout would randomise the reward).")
    with_grad = [name for name, param in rm.named_parameters() if param.requires_grad or param.grad is not None]
    if with_grad:
        raise AssertionError(f"{what}: reward-model parameters require or received gradients: {with_grad[:5]}")
    for name, param in rm.named_parameters():
        if not torch.equal(param.detach().cpu(), reward_snapshot[name]):
            raise AssertionError(f"{what}: reward-model parameter {name} changed during policy training.")


def logged(trainer, key: str) -> list[float]:
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def train_once(cli, tokenizer, dataset, rollout: str, output_dir: str, **overrides):
    policy, reward_model = build_models(tokenizer, cosyvoice_version=cli.cosyvoice_version)
    initial_policy = {k: v.detach().clone() for k, v in policy.named_parameters()}
    reward_snapshot = {k: v.detach().clone() for k, v in reward_model.state_dict().items()}
    resume = overrides.pop("resume_from_checkpoint", None)
    trainer = DiffROTrainer(
        model=policy,
        reward_model=reward_model,
        args=make_args(output_dir, rollout, cli, **overrides),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    what = f"[{trainer.accelerator.distributed_type}, {rollout}{', resumed' if resume else ''}]"
    if trainer.accelerator.num_processes != cli.expected_processes:
        raise AssertionError(
            f"{what}: {trainer.accelerator.num_processes} process(es) joined, expected {cli.expected_processes}; "
            "the ranks are training alone (missing gloo backend?)."
        )
    trainer.train(resume_from_checkpoint=resume)

    if trainer.state.global_step != trainer.args.max_steps:
        raise AssertionError(
            f"{what}: stopped at step {trainer.state.global_step}, expected {trainer.args.max_steps}."
        )
    losses = logged(trainer, "loss")
    if not losses or not all(math.isfinite(value) for value in losses):
        raise AssertionError(f"{what}: non-finite or missing losses {losses}.")
    check_reward_model(trainer, reward_model, reward_snapshot, what)
    state = full_state_dict(trainer)
    check_same_on_all_ranks(trainer, state, what)
    moved = [k for k, v in state.items() if k in initial_policy and not torch.equal(v, initial_policy[k].float())]
    if not moved:
        raise AssertionError(f"{what}: no policy parameter changed in {trainer.state.global_step} steps.")
    return trainer, state


def check_resume(cli, tokenizer, dataset, root: Path) -> dict:
    """Uninterrupted 2N steps (saving at N) vs. resuming that run's step-N checkpoint to 2N.

    Should be exact: the checkpoint holds the optimizer, the scheduler and every rank's random state, and the
    seeded sampler yields the same batches after the skipped ones. The trainer draws Gumbel noise and rollouts from
    its own per-rank generators, so their states must be part of the checkpoint too.
    """
    steps = cli.max_steps
    full_dir, resumed_dir = root / "resume_full", root / "resume_from_ckpt"
    full, full_state = train_once(
        cli,
        tokenizer,
        dataset,
        "offline",
        str(full_dir),
        max_steps=2 * steps,
        save_strategy="steps",
        save_steps=steps,
    )
    checkpoint = full_dir / f"checkpoint-{steps}"
    if not checkpoint.is_dir():
        raise AssertionError(f"No checkpoint written at {checkpoint}.")
    resumed, resumed_state = train_once(
        cli,
        tokenizer,
        dataset,
        "offline",
        str(resumed_dir),
        max_steps=2 * steps,
        resume_from_checkpoint=str(checkpoint),
    )
    full_losses = [e["loss"] for e in full.state.log_history if "loss" in e and e["step"] > steps]
    resumed_losses = [e["loss"] for e in resumed.state.log_history if "loss" in e and e["step"] > steps]
    max_diff = max((resumed_state[k] - full_state[k]).abs().max().item() for k in full_state)
    # Reported, not raised here: the test names a resume mismatch apart from a broken launch.
    return {
        "checkpoint_step": steps,
        "resumed_global_step": resumed.state.global_step,
        "losses_after_resume": resumed_losses,
        "uninterrupted_losses": full_losses,
        "max_param_diff": max_diff,
    }


def main():
    cli = parse_args()
    root = Path(cli.output_dir)
    if cli.cosyvoice_version == 3:
        phonemes = [phoneme for spec in TestbedConfig().languages for phoneme in spec.phonemes]
        tokenizer = build_tiny_cosyvoice3_tokenizer(phonemes + instruction_words("en"))
    else:
        tokenizer = build_testbed_tokenizer()
    corpus = make_emotion_corpus(num_train=32, num_test=4, codebook_size=CODEBOOK_SIZE, seed=0)
    dataset = corpus["train"]

    summary = {"cases": {}, "policy_class": None}
    distributed_type = None
    for rollout in [r for r in cli.rollouts.split(",") if r]:
        trainer, _ = train_once(cli, tokenizer, dataset, rollout, str(root / rollout))
        distributed_type = str(trainer.accelerator.distributed_type)
        summary["policy_class"] = type(trainer.accelerator.unwrap_model(trainer.model_wrapped)).__name__
        summary["cases"][rollout] = {
            "num_processes": trainer.accelerator.num_processes,
            "global_step": trainer.state.global_step,
            "losses": logged(trainer, "loss"),
            "kl": logged(trainer, "kl"),
            "sample_length": logged(trainer, "sample_length"),
            "log_keys": sorted({k for entry in trainer.state.log_history for k in entry}),
        }
    if cli.check_resume:
        summary["resume"] = check_resume(cli, tokenizer, dataset, root)
    summary["distributed_type"] = distributed_type
    if int(os.environ.get("RANK", "0")) == 0:
        (root / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"DIFFRO SMOKE OK: {json.dumps(summary)}")


if __name__ == "__main__":
    main()
    end_distributed_run()
