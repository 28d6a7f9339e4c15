"""GRPO step time against DiffRO step time on the same prompts (docs/grpo.md, "Cost").

Both steps start from the same prompts and generate their speech with the LM's RAS sampling, at a fixed length
(`--speech_len` tokens: the length bounds are pinned so that random weights do not stop at random), then:

* ``diffro``: `DiffROTrainer.training_step` with online rollouts: one completion per prompt, teacher-forced forward,
  straight-through Gumbel-Softmax, the frozen RM (RRPO's adversarial term, α = 0.5), backward;
* ``grpo G=g``: `CosyVoiceGRPOTrainer.training_step`: g completions per prompt, the RM on their one-hot (with the
  adversarial term), group advantages, teacher-forced forward of all g·B completions, clipped loss, backward.

The kinds run interleaved after a warm-up, so machine load affects them alike; the table gives each kind's median
step time, its generation share and its ratio to the DiffRO step. No optimizer step is timed. Usage:

    python benchmarks/grpo_step.py                                               # 0.5B shape, CPU, fp32
    python benchmarks/grpo_step.py --device cuda --dtype bf16 --batch_size 16 --speech_len 250 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from rrpo_hf.data.prompts import instruction_words
from rrpo_hf.models.cosyvoice2 import CosyVoice2LM, CosyVoice2LMConfig
from rrpo_hf.models.cosyvoice2.tokenization import build_tiny_cosyvoice2_tokenizer
from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
from rrpo_hf.trainers import CosyVoiceGRPOConfig, CosyVoiceGRPOTrainer, DiffROConfig, DiffROTrainer


#: CosyVoice2-0.5B's Qwen2 backbone (docs/architecture.md), and a small one for a quick check.
POLICY_SIZES = {
    "0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
    ),
    "small": dict(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=2048,
    ),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(POLICY_SIZES), default="0.5b")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--codebook_size", type=int, default=6561)
    parser.add_argument("--batch_size", type=int, default=2, help="Prompts per step (the same for every kind).")
    parser.add_argument("--text_len", type=int, default=16, help="Prompt text tokens.")
    parser.add_argument("--speech_len", type=int, default=50, help="Generated speech tokens per completion.")
    parser.add_argument("--generations", type=int, nargs="+", default=[4, 8], help="GRPO's G values.")
    parser.add_argument("--beta", type=float, default=0.0, help="KL weight of both methods (0: no reference).")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    cli = parser.parse_args()
    if cli.device == "cpu" and cli.dtype != "fp32":
        parser.error("Use --dtype fp32 on CPU (bf16 matmuls are emulated there and would distort the ratio).")
    return cli


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    cli = parse_args()
    if cli.threads:
        torch.set_num_threads(cli.threads)
    torch.manual_seed(cli.seed)
    tokenizer = build_tiny_cosyvoice2_tokenizer(instruction_words("en") + ["ka", "mi", "to"])
    dtype = DTYPES[cli.dtype]
    llm_config = dict(POLICY_SIZES[cli.size], max_position_embeddings=4096)
    policy = CosyVoice2LM(CosyVoice2LMConfig(llm_config=llm_config, speech_token_size=cli.codebook_size))
    policy = policy.to(device=cli.device, dtype=dtype)
    reward_model = RobustSERForAudioClassification(
        RobustSERConfig(
            vocab_size=cli.codebook_size,
            hidden_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=1024,
            max_position_embeddings=max(cli.speech_len, 16),
        )
    ).to(device=cli.device, dtype=dtype)

    generator = torch.Generator().manual_seed(cli.seed)
    text_vocab = len(tokenizer)
    prompts = torch.randint(0, text_vocab, (cli.batch_size, cli.text_len), generator=generator)
    prompt_end = tokenizer.convert_tokens_to_ids("<|endofprompt|>")
    prompts = torch.where(prompts == prompt_end, torch.zeros_like(prompts), prompts)
    labels = torch.randint(0, 6, (cli.batch_size,), generator=generator)

    def batch(repeat: int) -> dict:
        """The prompts, each `repeat` times in a row (GRPO's groups), as a DiffRO collator batch."""
        return {
            "text_ids": prompts.repeat_interleave(repeat, 0).to(cli.device),
            "text_attention_mask": torch.ones_like(prompts).repeat_interleave(repeat, 0).to(cli.device),
            "emotion_labels": labels.repeat_interleave(repeat, 0).to(cli.device),
            "texts": ["x"] * (cli.batch_size * repeat),
            "target_emotions": ["angry"] * (cli.batch_size * repeat),
        }

    # min_len = max_len = speech_len: every completion of every kind has the same length.
    common = dict(
        max_new_tokens=cli.speech_len,
        min_len_ratio=1000.0,
        max_len_ratio=1000.0,
        beta=cli.beta,
        reward_adv_alpha=0.5,
        report_to="none",
        disable_tqdm=True,
        use_cpu=cli.device == "cpu",
        save_strategy="no",
        seed=cli.seed,
    )
    kinds = {}
    with tempfile.TemporaryDirectory() as output_dir:
        diffro = DiffROTrainer(
            model=policy,
            reward_model=reward_model,
            args=DiffROConfig(
                output_dir=output_dir, rollout="online", per_device_train_batch_size=cli.batch_size, **common
            ),
            processing_class=tokenizer,
        )
        kinds["diffro"] = (diffro, batch(1))
        for g in cli.generations:
            args = CosyVoiceGRPOConfig(
                output_dir=output_dir, num_generations=g, per_device_train_batch_size=cli.batch_size * g, **common
            )
            trainer = CosyVoiceGRPOTrainer(
                model=policy, reward_model=reward_model, args=args, processing_class=tokenizer
            )
            kinds[f"grpo G={g}"] = (trainer, batch(g))

        times = {name: [] for name in kinds}
        generation = {name: [] for name in kinds}
        for trainer, _ in kinds.values():
            trainer.current_gradient_accumulation_steps = 1
            original = trainer._generate

            def timed_generate(*args, _original=original, _trainer=trainer, **kwargs):
                synchronize(cli.device)
                start = time.perf_counter()
                result = _original(*args, **kwargs)
                synchronize(cli.device)
                _trainer._generation_seconds += time.perf_counter() - start
                return result

            trainer._generate = timed_generate
        for repeat in range(cli.warmup + cli.repeats):
            for name, (trainer, inputs) in kinds.items():
                trainer._generation_seconds = 0.0
                policy.zero_grad(set_to_none=True)
                synchronize(cli.device)
                start = time.perf_counter()
                trainer.training_step(trainer.model, inputs)
                synchronize(cli.device)
                if repeat >= cli.warmup:
                    times[name].append(time.perf_counter() - start)
                    generation[name].append(trainer._generation_seconds)

    baseline = statistics.median(times["diffro"])
    print(
        f"{cli.size} policy ({sum(p.numel() for p in policy.parameters()) / 1e6:.0f}M), {cli.device} {cli.dtype}, "
        f"{cli.batch_size} prompts x {cli.text_len} text tokens, {cli.speech_len} speech tokens per completion, "
        f"beta {cli.beta}, RRPO RM (alpha 0.5), median of {cli.repeats} after {cli.warmup} warm-up"
    )
    print("| kind | completions | step (s) | generation share | vs DiffRO |")
    print("|---|---:|---:|---:|---:|")
    for name, (_, inputs) in kinds.items():
        median = statistics.median(times[name])
        share = statistics.median(generation[name]) / median
        count = inputs["text_ids"].shape[0]
        print(f"| {name} | {count} | {median:.2f} | {share:.0%} | {median / baseline:.2f}x |")


if __name__ == "__main__":
    main()
