"""Distributed smoke run of `CosyVoiceGRPOTrainer`, launched by `tests/test_grpo_distributed.py`.

    accelerate launch --config_file tests/accelerate_configs/cpu_zero3.yaml \
        tests/scripts/grpo_smoke.py --output_dir /tmp/grpo

Trains the toy policy of `diffro_smoke.py` for a few GRPO steps (generation with gathered parameters under ZeRO-3,
the reference policy for β > 0, the robust RM's adversarial term in the reward) and checks, inside the launched
processes: the process count, finite losses, a frozen unwrapped reward model, a policy that moved, and identical
parameters on every rank. Rank 0 writes `<output_dir>/summary.json`.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
from diffro_smoke import build_models, check_reward_model, check_same_on_all_ranks, full_state_dict  # noqa: E402

from rrpo_hf.script_utils import end_distributed_run  # noqa: E402
from rrpo_hf.testbed import build_testbed_tokenizer, make_emotion_corpus  # noqa: E402
from rrpo_hf.trainers import CosyVoiceGRPOConfig, CosyVoiceGRPOTrainer  # noqa: E402


def main():
    output_dir = sys.argv[sys.argv.index("--output_dir") + 1]
    tokenizer = build_testbed_tokenizer()
    dataset = make_emotion_corpus(language="alpha", num_train=16, num_test=2, codebook_size=512, seed=0)["train"]
    policy, reward_model = build_models(tokenizer)
    initial = {name: param.detach().clone() for name, param in policy.named_parameters()}
    reward_snapshot = {name: param.detach().clone() for name, param in reward_model.named_parameters()}
    args = CosyVoiceGRPOConfig(
        output_dir=output_dir,
        num_generations=2,
        per_device_train_batch_size=4,
        beta=0.04,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        max_new_tokens=16,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        ddp_backend="gloo",
        seed=0,
    )
    trainer = CosyVoiceGRPOTrainer(
        model=policy, reward_model=reward_model, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    if trainer.accelerator.num_processes != 2:
        raise AssertionError(f"{trainer.accelerator.num_processes} processes; the launch did not go distributed.")
    losses = [entry["loss"] for entry in trainer.state.log_history if "reward" in entry]
    if len(losses) != 2 or not all(math.isfinite(loss) for loss in losses):
        raise AssertionError(f"Losses {losses}: expected two finite values.")
    check_reward_model(trainer, reward_model, reward_snapshot, "GRPO")
    state = full_state_dict(trainer)
    check_same_on_all_ranks(trainer, state, "GRPO")
    moved = max((state[name] - initial[name].float()).abs().max().item() for name in initial)
    if moved == 0:
        raise AssertionError("The policy did not move.")
    if trainer.accelerator.is_main_process:
        summary = {
            "num_processes": trainer.accelerator.num_processes,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "losses": losses,
            "kl": [entry["kl"] for entry in trainer.state.log_history if "kl" in entry],
            "moved": moved,
        }
        (Path(output_dir) / "summary.json").write_text(json.dumps(summary))
    torch.distributed.barrier()
    end_distributed_run()


if __name__ == "__main__":
    main()
