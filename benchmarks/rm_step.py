"""Cost of one robust reward-model training step (LS + EAM + Adv) relative to one vanilla step.

Both steps run through `RobustRewardTrainer.training_step` on the same model and the same speech tokens (the robust
batch also carries the collator's EAM plan), followed by the optimizer step. Steps alternate robust/vanilla after a
warm-up, and the medians are compared in one run, so machine load affects both alike:

    python benchmarks/rm_step.py                      # contract-default model size (D=256, 4 layers), B=16, L=200
    python benchmarks/rm_step.py --hidden_size 64 --num_layers 2 --repeats 50

Target: ratio <= 1.2 (re-running the encoder forward and backward for the adversarial term would give ~2.0).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from tqdm.auto import tqdm

from rrpo_hf.data.collators import DataCollatorForEnergyAdaptiveMixup, DataCollatorForSpeechEmotion
from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
from rrpo_hf.trainers import RobustRewardConfig, RobustRewardTrainer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--vocab_size", type=int, default=6561)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=200, help="Longest sequence (25 Hz tokens: 200 = 8 s).")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def make_trainer(model, robust: bool, output_dir: str, device: str) -> RobustRewardTrainer:
    args = RobustRewardConfig(
        output_dir=output_dir,
        label_smoothing=0.1 if robust else 0.0,
        use_eam=robust,
        adv_alpha=0.5 if robust else 0.0,
        learning_rate=1e-5,
        report_to="none",
        use_cpu=device == "cpu",
        disable_tqdm=True,
    )
    trainer = RobustRewardTrainer(model=model, args=args)
    trainer.create_optimizer()
    # Normally set by the training loop: one micro-batch per optimizer step here.
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def main():
    cli = parse_args()
    if cli.threads:
        torch.set_num_threads(cli.threads)
    torch.manual_seed(cli.seed)
    config = RobustSERConfig(
        vocab_size=cli.vocab_size,
        hidden_size=cli.hidden_size,
        num_hidden_layers=cli.num_layers,
        num_attention_heads=cli.num_heads,
        intermediate_size=4 * cli.hidden_size,
        max_position_embeddings=max(cli.seq_len, 16),
    )
    model = RobustSERForAudioClassification(config)
    generator = torch.Generator().manual_seed(cli.seed)
    lengths = torch.randint(cli.seq_len // 2, cli.seq_len + 1, (cli.batch_size,), generator=generator)
    features = [
        {
            "speech_tokens": torch.randint(0, cli.vocab_size, (int(n),), generator=generator).tolist(),
            "emotion": int(i % config.num_labels),
        }
        for i, n in enumerate(lengths)
    ]
    collator_kwargs = dict(pad_token_id=config.pad_token_id, vocab_size=config.vocab_size)
    robust_batch = DataCollatorForEnergyAdaptiveMixup(**collator_kwargs, seed=cli.seed)(features)
    vanilla_batch = DataCollatorForSpeechEmotion(**collator_kwargs)(features)
    assert torch.equal(robust_batch["input_ids"], vanilla_batch["input_ids"])

    with tempfile.TemporaryDirectory() as output_dir:
        trainers = {
            "robust": make_trainer(model, True, output_dir, cli.device),
            "vanilla": make_trainer(model, False, output_dir, cli.device),
        }
        batches = {"robust": robust_batch, "vanilla": vanilla_batch}
        model = model.to(cli.device).train()
        synchronize = torch.cuda.synchronize if cli.device.startswith("cuda") else (lambda: None)

        def step(name: str) -> float:
            trainer = trainers[name]
            synchronize()
            start = time.perf_counter()
            trainer.training_step(model, dict(batches[name]))
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            synchronize()
            return time.perf_counter() - start

        times = {"robust": [], "vanilla": []}
        for index in tqdm(range(cli.warmup + cli.repeats), desc="steps (robust + vanilla)"):
            # Alternate the order so neither variant systematically runs on a warmer cache.
            order = ("robust", "vanilla") if index % 2 == 0 else ("vanilla", "robust")
            for name in order:
                elapsed = step(name)
                if index >= cli.warmup:
                    times[name].append(elapsed)

    robust, vanilla = statistics.median(times["robust"]), statistics.median(times["vanilla"])
    print(
        f"model: D={cli.hidden_size}, layers={cli.num_layers}, vocab={cli.vocab_size}; batch {cli.batch_size} x "
        f"<= {cli.seq_len} tokens; device {cli.device}, threads {torch.get_num_threads()}; "
        f"{cli.repeats} timed steps each after {cli.warmup} warm-up"
    )
    print(f"vanilla step (no LS/EAM/Adv): median {1000 * vanilla:.1f} ms")
    print(f"robust step  (LS + EAM + Adv): median {1000 * robust:.1f} ms")
    print(f"robust / vanilla = {robust / vanilla:.3f}  (target <= 1.2)")


if __name__ == "__main__":
    main()
