"""Cost of one DiffRO / RRPO step (offline rollout) relative to one plain teacher-forced forward+backward.

All three step kinds run in one process on the same policy and the same tokens, interleaved after a warm-up, and
the medians are compared, so machine load affects them alike:

* ``plain``: `CosyVoice2LM(**batch, labels=...)` cross-entropy forward + backward (what SFT pays);
* ``diffro beta=0``: `DiffROTrainer.training_step` -- teacher-forced forward, straight-through Gumbel-Softmax over
  the codebook, the frozen RM on the one-hot samples with the RRPO adversarial term (alpha = 0.5), backward;
* ``diffro beta>0``: the same plus one no-grad forward of the frozen reference policy and the token-level KL.

Targets: ratio <= 1.15 with beta = 0 (the step only adds sampling and the small frozen RM) and <= 1.5 with beta > 0.
No optimizer step is timed (it is identical for both). After the timed steps, a few more steps of each kind run
with every phase timed (policy forward, Gumbel sampling, RM forward, RM loss + adversarial grad, reference forward,
KL, step metrics, backward, rest) and the per-phase table is printed. Then each of full fine-tuning with beta = 0,
full fine-tuning with beta > 0 and LoRA with beta > 0 runs two optimizer steps in its own subprocess, which reports
its peak memory (CPU: peak RSS; CUDA: `torch.cuda.max_memory_allocated`); target: full-FT beta > 0 <= 1.35x beta = 0
(the KL reference holds weights only: no gradients, no optimizer state). Usage:

    python benchmarks/diffro_step.py                                        # small CPU config
    python benchmarks/diffro_step.py --size 0.5b --dtype bf16 --device cuda # CosyVoice2-0.5B size (random weights) + MFU
    python benchmarks/diffro_step.py --size 0.5b --dtype bf16 --device cuda --lora --rollout online --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import torch
from tqdm.auto import tqdm

from rrpo_hf.models.cosyvoice2 import CosyVoice2LM, CosyVoice2LMConfig
from rrpo_hf.models.cosyvoice2.prompts import instruction_words
from rrpo_hf.models.cosyvoice2.tokenization import build_tiny_cosyvoice2_tokenizer
from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
from rrpo_hf.trainers import DiffROConfig, DiffROTrainer
from rrpo_hf.trainers import diffro_trainer as diffro_trainer_module

IGNORE_INDEX = -100
#: Backbone sizes: "small" fits a laptop CPU; "0.5b" is CosyVoice2-0.5B's Qwen2 (COSYVOICE2.md).
POLICY_SIZES = {
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=2048),
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, rope_theta=1e6, rms_norm_eps=1e-6),
}
#: Dense bf16 peak of known accelerators (TFLOP/s), for MFU.
#: H200: the dense bf16 figure this project's MFU is stated against (issue 13), below the 989 of the data sheet.
PEAK_TFLOPS = {"H200": 790.0, "H100": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(POLICY_SIZES), default="small", help="Policy backbone size.")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="Weights dtype of policy and RM.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--codebook_size", type=int, default=6561, help="Speech codebook (CosyVoice2 S3: 6561).")
    parser.add_argument("--batch_size", type=int, default=None, help="Default: 4 (small), 16 (0.5b).")
    parser.add_argument("--text_len", type=int, default=32, help="Prompt text tokens (instruction + text).")
    parser.add_argument("--speech_len", type=int, default=None, help="Speech tokens (25 Hz); default 100 / 250.")
    parser.add_argument("--beta", type=float, default=0.1, help="KL weight of the beta>0 measurement.")
    parser.add_argument("--reward_adv_alpha", type=float, default=0.5, help="0.5 = RRPO, 0 = plain DiffRO.")
    parser.add_argument("--rm_hidden_size", type=int, default=256, help="Reward model size (contract default).")
    parser.add_argument("--rm_layers", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    parser.add_argument("--peak_tflops", type=float, default=None, help="Accelerator peak for MFU (default: by name).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rollout", choices=["offline", "online"], default="offline",
                        help="online: each DiffRO step first generates its speech tokens (max speech_len of them).")
    parser.add_argument("--lora", action="store_true", help="Train a LoRA adapter (r=16, all linear layers) instead.")
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--phase_repeats", type=int, default=3, help="Steps of each kind timed phase by phase.")
    parser.add_argument("--skip_memory", action="store_true", help="Skip the per-configuration peak-memory runs.")
    parser.add_argument("--memory_steps", type=int, default=2, help="Optimizer steps of each peak-memory run.")
    parser.add_argument("--json", default=None, help="Also write every figure to this JSON file.")
    parser.add_argument("--memory_child", default=None, help=argparse.SUPPRESS)  # internal: "full:0.1", "lora:0.1"
    cli = parser.parse_args()
    large = cli.size == "0.5b"
    cli.batch_size = cli.batch_size or (16 if large else 4)
    cli.speech_len = cli.speech_len or (250 if large else 100)
    if cli.device == "cpu" and cli.dtype != "fp32":
        parser.error("Use --dtype fp32 on CPU (bf16 matmuls are emulated there and would distort the ratio).")
    if cli.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available.")
    return cli


def build_models(cli, dtype, device, num_text_tokens: int):
    torch.manual_seed(cli.seed)
    llm_config = dict(POLICY_SIZES[cli.size], max_position_embeddings=4096)
    llm_config["vocab_size"] = max(llm_config["vocab_size"], num_text_tokens)
    policy = CosyVoice2LM(CosyVoice2LMConfig(llm_config=llm_config, speech_token_size=cli.codebook_size))
    reward_model = RobustSERForAudioClassification(
        RobustSERConfig(
            vocab_size=cli.codebook_size,
            hidden_size=cli.rm_hidden_size,
            num_hidden_layers=cli.rm_layers,
            num_attention_heads=4,
            intermediate_size=4 * cli.rm_hidden_size,
            max_position_embeddings=max(cli.speech_len, 16),
        )
    )
    return policy.to(device=device, dtype=dtype), reward_model.to(device=device, dtype=dtype)


def make_batch(cli, text_vocab: int, device):
    """Random prompts and speech tokens with ragged lengths (3/4 to full), as a padded batch."""
    generator = torch.Generator().manual_seed(cli.seed)
    b, t, s = cli.batch_size, cli.text_len, cli.speech_len
    text_lengths = torch.randint(3 * t // 4, t + 1, (b,), generator=generator)
    speech_lengths = torch.randint(3 * s // 4, s + 1, (b,), generator=generator)
    text_attention_mask = (torch.arange(t)[None] < text_lengths[:, None]).long()
    speech_attention_mask = (torch.arange(s)[None] < speech_lengths[:, None]).long()
    text_ids = torch.randint(0, text_vocab, (b, t), generator=generator) * text_attention_mask
    speech_ids = torch.randint(0, cli.codebook_size, (b, s), generator=generator) * speech_attention_mask
    labels = torch.full((b, s + 1), IGNORE_INDEX)
    for i in range(b):
        labels[i, : speech_lengths[i]] = speech_ids[i, : speech_lengths[i]]
        labels[i, speech_lengths[i]] = cli.codebook_size  # eos
    common = {
        "text_ids": text_ids,
        "text_attention_mask": text_attention_mask,
        "speech_ids": speech_ids,
        "speech_attention_mask": speech_attention_mask,
    }
    plain = {**common, "labels": labels}
    diffro = {**common, "emotion_labels": torch.randint(0, 6, (b,), generator=generator)}
    to_device = lambda batch: {k: v.to(device) for k, v in batch.items()}  # noqa: E731
    num_tokens = int(text_lengths.sum() + speech_lengths.sum() + 2 * b)
    return to_device(plain), to_device(diffro), num_tokens, int(speech_lengths.sum() + b)


def make_trainer(policy, reward_model, tokenizer, cli, beta: float, output_dir: str) -> DiffROTrainer:
    args = DiffROConfig(
        output_dir=output_dir,
        rollout="offline",
        beta=beta,
        reward_adv_alpha=cli.reward_adv_alpha,
        report_to="none",
        disable_tqdm=True,
        use_cpu=cli.device == "cpu",
        save_strategy="no",
        seed=cli.seed,
    )
    trainer = DiffROTrainer(model=policy, reward_model=reward_model, args=args, processing_class=tokenizer)
    # Normally set by the training loop: one micro-batch per optimizer step here.
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def synchronize(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def policy_train_flops(policy: CosyVoice2LM, num_tokens: int, num_speech_positions: int, seq_len: int) -> float:
    """Model FLOPs of one forward+backward of the policy: 6·N per token (+ attention scores), as PaLM's MFU."""
    config = policy.config.llm_config
    backbone = sum(p.numel() for name, p in policy.model.named_parameters() if "embed_tokens" not in name)
    head = sum(p.numel() for p in policy.llm_decoder.parameters())
    attention = 12 * config.num_hidden_layers * config.hidden_size * seq_len  # QK^T and AV, fwd+bwd, per token
    return 6.0 * backbone * num_tokens + 6.0 * head * num_speech_positions + attention * num_tokens


def main():
    cli = parse_args()
    if cli.threads:
        torch.set_num_threads(cli.threads)
    dtype, device = DTYPES[cli.dtype], cli.device
    tokenizer = build_tiny_cosyvoice2_tokenizer(instruction_words("en") + ["ka", "mi", "to"])
    policy, reward_model = build_models(cli, dtype, device, len(tokenizer))
    plain_batch, diffro_batch, num_tokens, num_speech_positions = make_batch(
        cli, policy.config.llm_config.vocab_size, device
    )
    with tempfile.TemporaryDirectory() as output_dir:
        trainers = {
            "diffro beta=0": make_trainer(policy, reward_model, tokenizer, cli, 0.0, output_dir),
            f"diffro beta={cli.beta:g}": make_trainer(policy, reward_model, tokenizer, cli, cli.beta, output_dir),
        }

        def plain_step():
            policy.train()
            policy(**plain_batch).loss.backward()

        steps = {"plain": plain_step}
        for name, trainer in trainers.items():
            steps[name] = lambda trainer=trainer: trainer.training_step(trainer.model, dict(diffro_batch))

        times = {name: [] for name in steps}
        for repeat in tqdm(range(cli.warmup + cli.repeats), desc="interleaved steps"):
            for name, step in steps.items():
                policy.zero_grad(set_to_none=True)
                synchronize(device)
                start = time.perf_counter()
                step()
                synchronize(device)
                if repeat >= cli.warmup:
                    times[name].append(time.perf_counter() - start)
        policy.zero_grad(set_to_none=True)

    medians = {name: statistics.median(values) for name, values in times.items()}
    n_params = sum(p.numel() for p in policy.parameters())
    policy_compute = sum(p.numel() for n, p in policy.named_parameters() if "embed_tokens" not in n)
    rm_compute = sum(p.numel() for p in reward_model.parameters())
    print(
        f"policy {cli.size} ({n_params / 1e6:.1f}M params, {cli.dtype}, {device}); RM hidden {cli.rm_hidden_size} x "
        f"{cli.rm_layers} layers; batch {cli.batch_size}, text {cli.text_len}, speech {cli.speech_len}, codebook "
        f"{cli.codebook_size}, alpha {cli.reward_adv_alpha}; median of {cli.repeats} after {cli.warmup} warm-up"
    )
    flops = policy_train_flops(policy, num_tokens, num_speech_positions, cli.text_len + cli.speech_len + 2)
    peak = cli.peak_tflops
    if peak is None and device.startswith("cuda"):
        gpu_name = torch.cuda.get_device_name()
        peak = next((value for key, value in PEAK_TFLOPS.items() if key in gpu_name), None)
    for name, seconds in medians.items():
        ratio = seconds / medians["plain"]
        line = f"{name:>16}: {seconds * 1e3:9.2f} ms  ratio {ratio:5.3f}"
        if name != "plain":
            target = 1.15 if name == "diffro beta=0" else 1.5
            line += f"  (target <= {target}: {'met' if ratio <= target else 'NOT met'})"
        achieved = flops / seconds / 1e12
        line += f"  policy model TFLOP/s {achieved:.2f}"
        if peak:
            line += f"  MFU {achieved / peak:.1%}"
        print(line)
    # The RM's cost is fixed (it reads the 6561-way codebook at every speech position): it is negligible next to a
    # 0.5B policy but comparable to a toy one, so the targets speak about the real size.
    print(
        f"RM / policy parameters touched per speech token: {rm_compute / 1e6:.1f}M / {policy_compute / 1e6:.1f}M "
        f"({rm_compute / policy_compute:.0%}); the targets are stated for CosyVoice2-0.5B size (--size 0.5b)."
    )


if __name__ == "__main__":
    main()
