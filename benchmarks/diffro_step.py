"""Cost of one DiffRO / RRPO step (offline rollout) relative to one plain teacher-forced forward+backward.

All three step kinds run in one process on the same policy and the same tokens, interleaved after a warm-up, and
the medians are compared, so machine load affects them alike:

* ``plain``: `CosyVoice2LM(**batch, labels=...)` cross-entropy forward + backward (what SFT pays);
* ``diffro beta=0``: `DiffROTrainer.training_step` -- teacher-forced forward, straight-through Gumbel-Softmax over
  the codebook, the frozen RM on the one-hot samples with the RRPO adversarial term (alpha = 0.5), backward;
* ``diffro beta>0``: the same plus one no-grad forward of the frozen reference policy and the token-level KL.

Targets: ratio <= 1.15 with beta = 0 (the step only adds sampling and the small frozen RM) and <= 1.5 with beta > 0.
No optimizer step is timed (it is identical for both). After the timed steps, a few more steps of each kind run
with every phase timed (policy forward, Gumbel sampling, RM forward, reward losses + adversarial grad, reference
forward, KL, step metrics, backward, rest) and the per-phase table is printed. Then each of full fine-tuning with
beta = 0, full fine-tuning with beta > 0 and LoRA with beta > 0 runs two optimizer steps in its own subprocess, which
reports its peak memory (CPU: peak RSS; CUDA: `torch.cuda.max_memory_allocated`); target: full-FT beta > 0 <= 1.35x
beta = 0 (the KL reference holds weights only: no gradients, no optimizer state).

The cost of each extra reward (docs/architecture.md, "Several rewards") is measured the same way, interleaved in one
run, as the step time relative to the single emotion reward step (RRPO, beta = 0 so that the rewards' share is not
diluted by the reference forward): + the ASR reward of a multi-task RM (CTC over `--asr_symbols` symbols per sample),
+ its quality reward, + both (one model, two heads, two forwards), a 3-RM emotion ensemble (`min`), and + ASR with
the ASR gate on the emotion reward. The extra reward models have the emotion RM's size. Usage:

    python benchmarks/diffro_step.py                                        # small CPU config
    python benchmarks/diffro_step.py --size 0.5b --dtype bf16 --device cuda  # CosyVoice2-0.5B shape, random weights
    python benchmarks/diffro_step.py --size 0.5b --dtype bf16 --device cuda --lora --rollout online --json out.json
    python benchmarks/diffro_step.py --only_reward_costs                    # only the cost of each extra reward
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

from rrpo_hf.data.prompts import instruction_words
from rrpo_hf.models.cosyvoice2 import CosyVoice2LM, CosyVoice2LMConfig
from rrpo_hf.models.cosyvoice2.tokenization import build_tiny_cosyvoice2_tokenizer
from rrpo_hf.models.robust_ser import (
    RobustMultiTaskRMConfig,
    RobustSERConfig,
    RobustSERForAudioClassification,
    RobustSERForMultiTaskReward,
)
from rrpo_hf.rewards import ASRReward, QualityReward
from rrpo_hf.trainers import DiffROConfig, DiffROTrainer
from rrpo_hf.trainers import diffro_trainer as diffro_trainer_module


IGNORE_INDEX = -100
#: Backbone sizes: "small" fits a laptop CPU; "0.5b" is CosyVoice2-0.5B's Qwen2 (docs/architecture.md).
POLICY_SIZES = {
    "small": dict(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=2048,
    ),
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
    parser.add_argument(
        "--rollout",
        choices=["offline", "online"],
        default="offline",
        help="online: each DiffRO step first generates its speech tokens (max speech_len of them).",
    )
    parser.add_argument("--lora", action="store_true", help="Train a LoRA adapter (r=16, all linear layers) instead.")
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--phase_repeats", type=int, default=3, help="Steps of each kind timed phase by phase.")
    parser.add_argument("--skip_memory", action="store_true", help="Skip the per-configuration peak-memory runs.")
    parser.add_argument("--memory_steps", type=int, default=2, help="Optimizer steps of each peak-memory run.")
    parser.add_argument(
        "--asr_symbols",
        type=int,
        default=None,
        help="Transcript symbols per sample for the ASR reward (default: speech_len // 4).",
    )
    parser.add_argument(
        "--skip_reward_costs", action="store_true", help="Skip the cost of each extra reward (default: measured)."
    )
    parser.add_argument(
        "--only_reward_costs",
        action="store_true",
        help="Measure only the cost of each extra reward (default: every section).",
    )
    parser.add_argument("--json", default=None, help="Also write every figure to this JSON file.")
    parser.add_argument("--memory_child", default=None, help=argparse.SUPPRESS)  # internal: "full:0.1", "lora:0.1"
    cli = parser.parse_args()
    large = cli.size == "0.5b"
    cli.batch_size = cli.batch_size or (16 if large else 4)
    cli.speech_len = cli.speech_len or (250 if large else 100)
    cli.asr_symbols = cli.asr_symbols or max(cli.speech_len // 4, 1)
    if cli.asr_symbols > 3 * cli.speech_len // 4:
        parser.error("--asr_symbols must fit the shortest speech (3/4 of speech_len) for a CTC alignment to exist.")
    if cli.skip_reward_costs and cli.only_reward_costs:
        parser.error("--skip_reward_costs and --only_reward_costs exclude each other.")
    if cli.device == "cpu" and cli.dtype != "fp32":
        parser.error("Use --dtype fp32 on CPU (bf16 matmuls are emulated there and would distort the ratio).")
    if cli.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available.")
    return cli


def make_emotion_reward_model(cli) -> RobustSERForAudioClassification:
    return RobustSERForAudioClassification(
        RobustSERConfig(
            vocab_size=cli.codebook_size,
            hidden_size=cli.rm_hidden_size,
            num_hidden_layers=cli.rm_layers,
            num_attention_heads=4,
            intermediate_size=4 * cli.rm_hidden_size,
            max_position_embeddings=max(cli.speech_len, 16),
        )
    )


def build_models(cli, dtype, device, num_text_tokens: int):
    torch.manual_seed(cli.seed)
    llm_config = dict(POLICY_SIZES[cli.size], max_position_embeddings=4096)
    llm_config["vocab_size"] = max(llm_config["vocab_size"], num_text_tokens)
    policy = CosyVoice2LM(CosyVoice2LMConfig(llm_config=llm_config, speech_token_size=cli.codebook_size))
    reward_model = make_emotion_reward_model(cli)
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


def lora_config(cli):
    from peft import LoraConfig

    # No task_type: PEFT's CAUSAL_LM wrapper would rename the policy's inputs (as the recipes' LoRA does).
    return LoraConfig(
        r=cli.lora_r,
        lora_alpha=2 * cli.lora_r,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )


def make_trainer(
    policy, reward_model, tokenizer, cli, beta: float, output_dir: str, peft_config=None, reward_funcs=None, **config
) -> DiffROTrainer:
    args = DiffROConfig(
        **config,
        output_dir=output_dir,
        rollout=cli.rollout,
        max_new_tokens=cli.speech_len,
        beta=beta,
        reward_adv_alpha=cli.reward_adv_alpha,
        report_to="none",
        disable_tqdm=True,
        use_cpu=cli.device == "cpu",
        save_strategy="no",
        seed=cli.seed,
        bf16=False,
    )
    trainer = DiffROTrainer(
        model=policy,
        reward_model=reward_model,
        reward_funcs=reward_funcs,
        args=args,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
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


# ---------------------------------------------------------------------------------------------------- phase timing

PHASES = [
    "rollout generation",
    "policy forward",
    "Gumbel sampling",
    "RM forward",
    "reward losses + adversarial grad",
    "reference forward",
    "KL",
    "step metrics",
    "backward",
    "rest (inputs, loss, Trainer)",
]


class PhaseTimer:
    """Exclusive wall time per phase: a phase that runs inside another is subtracted from the outer one."""

    def __init__(self, device: str):
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []  # [name, start]

    def enter(self, name: str):
        synchronize(self.device)
        now = time.perf_counter()
        if self._stack:
            self.totals[self._stack[-1][0]] += now - self._stack[-1][1]
        self._stack.append([name, now])

    def exit(self):
        synchronize(self.device)
        now = time.perf_counter()
        name, start = self._stack.pop()
        self.totals[name] += now - start
        if self._stack:
            self._stack[-1][1] = now

    @contextlib.contextmanager
    def phase(self, name: str):
        self.enter(name)
        try:
            yield
        finally:
            self.exit()

    def wrap(self, name: str, function):
        def timed(*args, **kwargs):
            with self.phase(name):
                return function(*args, **kwargs)

        return timed


@contextlib.contextmanager
def phase_instrumentation(timer_ref: list, policy, reward_model, trainers):
    """Time the phases of whichever step runs, into `timer_ref[0]` (a PhaseTimer, or None for no timing)."""

    def timed(name, function):
        def call(*args, **kwargs):
            timer = timer_ref[0]
            if timer is None:
                return function(*args, **kwargs)
            with timer.phase(name):
                return function(*args, **kwargs)

        return call

    def forward_hooks(module, name):
        # Only forwards that build a graph: the no-grad reference / generation forwards are their own phases.
        def pre(*_):
            if timer_ref[0] is not None and torch.is_grad_enabled():
                timer_ref[0].enter(name)
                module._phase_timed = True

        def post(*_):
            if getattr(module, "_phase_timed", False):
                module._phase_timed = False
                timer_ref[0].exit()

        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    handles = forward_hooks(policy, "policy forward") + forward_hooks(reward_model, "RM forward")
    patched = ("gumbel_softmax_sample", "token_level_kl")
    module_patches = {name: getattr(diffro_trainer_module, name) for name in patched}
    diffro_trainer_module.gumbel_softmax_sample = timed("Gumbel sampling", module_patches["gumbel_softmax_sample"])
    diffro_trainer_module.token_level_kl = timed("KL", module_patches["token_level_kl"])
    for trainer in trainers:
        trainer._generate = timed("rollout generation", trainer._generate)
        trainer.rewards.compute = timed("reward losses + adversarial grad", trainer.rewards.compute)
        trainer._reference_logits = timed("reference forward", trainer._reference_logits)
        trainer._record_step_metrics = timed("step metrics", trainer._record_step_metrics)
        trainer.accelerator.backward = timed("backward", trainer.accelerator.backward)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for name, function in module_patches.items():
            setattr(diffro_trainer_module, name, function)
        for trainer in trainers:
            for name in ("_generate", "_reference_logits", "_record_step_metrics"):
                del trainer.__dict__[name]
            del trainer.rewards.__dict__["compute"]
            del trainer.accelerator.__dict__["backward"]


# ---------------------------------------------------------------------------------------------------- peak memory


def memory_child(cli) -> dict:
    """One configuration ("full:0.1", "full:0", "lora:0.1"): build, then `memory_steps` optimizer steps; the peak."""
    kind, beta = cli.memory_child.split(":")
    beta = float(beta)
    if cli.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    tokenizer = build_tiny_cosyvoice2_tokenizer(instruction_words("en") + ["ka", "mi", "to"])
    policy, reward_model = build_models(cli, DTYPES[cli.dtype], cli.device, len(tokenizer))
    _, diffro_batch, _, _ = make_batch(cli, policy.config.llm_config.vocab_size, cli.device)
    with tempfile.TemporaryDirectory() as output_dir:
        peft_config = lora_config(cli) if kind == "lora" else None
        trainer = make_trainer(policy, reward_model, tokenizer, cli, beta, output_dir, peft_config=peft_config)
        trainer.create_optimizer()
        for _ in range(cli.memory_steps):
            trainer.training_step(trainer.model, dict(diffro_batch))
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
        synchronize(cli.device)
    if cli.device.startswith("cuda"):
        peak, what = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
    else:
        peak, what = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS"  # Linux: KiB
    return {"config": cli.memory_child, "peak_bytes": peak, "measure": what}


MEMORY_CONFIGS = {
    "full FT, beta=0": "full:0",
    "full FT, beta={beta:g}": "full:{beta}",
    "LoRA, beta={beta:g}": "lora:{beta}",
}


def measure_memory(cli) -> dict:
    results = {}
    for label, config in MEMORY_CONFIGS.items():
        label, config = label.format(beta=cli.beta), config.format(beta=cli.beta)
        argv = [arg for arg in sys.argv[1:] if arg != "--lora"] + ["--memory_child", config]
        output = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *argv], check=True, capture_output=True, text=True
        ).stdout
        results[label] = json.loads(output.strip().splitlines()[-1])
    return results


# ---------------------------------------------------------------------------------------------------- main


def measure_step_kinds(cli, policy, base_policy, reward_model, tokenizer, batches) -> dict:
    """plain vs DiffRO beta = 0 vs beta > 0 (interleaved), their phases and (subprocesses) peak memory; prints them."""
    device = cli.device
    plain_batch, diffro_batch, num_tokens, num_speech_positions = batches
    with tempfile.TemporaryDirectory() as output_dir:
        trainers = {
            "diffro beta=0": make_trainer(policy, reward_model, tokenizer, cli, 0.0, output_dir),
            f"diffro beta={cli.beta:g}": make_trainer(policy, reward_model, tokenizer, cli, cli.beta, output_dir),
        }

        timer_ref = [None]

        def plain_step():
            policy.train()
            loss = policy(**plain_batch).loss
            if timer_ref[0] is None:
                loss.backward()
            else:
                with timer_ref[0].phase("backward"):
                    loss.backward()

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

        # Phase by phase, in separate steps: the synchronisations of the timers stay out of the ratios above.
        phases = {name: PhaseTimer(device) for name in steps}
        with phase_instrumentation(timer_ref, base_policy, reward_model, trainers.values()):
            for _ in tqdm(range(cli.phase_repeats), desc="phase-timed steps"):
                for name, step in steps.items():
                    policy.zero_grad(set_to_none=True)
                    timer_ref[0] = phases[name]
                    with phases[name].phase("rest (inputs, loss, Trainer)"):
                        step()
                    timer_ref[0] = None
        policy.zero_grad(set_to_none=True)
        del trainers, steps
    memory = {} if cli.skip_memory else measure_memory(cli)

    medians = {name: statistics.median(values) for name, values in times.items()}
    n_params = sum(p.numel() for p in base_policy.parameters())
    policy_compute = sum(p.numel() for n, p in base_policy.named_parameters() if "embed_tokens" not in n)
    rm_compute = sum(p.numel() for p in reward_model.parameters())
    print(
        f"policy {cli.size} ({n_params / 1e6:.1f}M params, {cli.dtype}, {device}, {'LoRA' if cli.lora else 'full'}, "
        f"{cli.rollout} rollout); RM hidden {cli.rm_hidden_size} x {cli.rm_layers} layers; batch {cli.batch_size}, "
        f"text {cli.text_len}, speech {cli.speech_len}, codebook {cli.codebook_size}, alpha {cli.reward_adv_alpha}; "
        f"threads {torch.get_num_threads()}; median of {cli.repeats} after {cli.warmup} warm-up"
    )
    flops = policy_train_flops(base_policy, num_tokens, num_speech_positions, cli.text_len + cli.speech_len + 2)
    peak = cli.peak_tflops
    if peak is None and device.startswith("cuda"):
        gpu_name = torch.cuda.get_device_name()
        peak = next((value for key, value in PEAK_TFLOPS.items() if key in gpu_name), None)
    report = {"steps": {}, "phases_ms": {}, "memory": memory, "peak_tflops": peak}
    for name, seconds in medians.items():
        ratio = seconds / medians["plain"]
        line = f"{name:>16}: {seconds * 1e3:9.2f} ms  ratio {ratio:5.3f}"
        if name != "plain":
            target = 1.15 if name == "diffro beta=0" else 1.5
            line += f"  (target <= {target}: {'met' if ratio <= target else 'NOT met'})"
        # Policy model FLOPs only (the rollout's generation, the RM and the reference forward are not counted).
        achieved = flops / seconds / 1e12
        line += f"  policy model TFLOP/s {achieved:.2f}"
        mfu = achieved / peak if peak else None
        if mfu is not None:
            line += f"  MFU {mfu:.1%} of {peak:g}"
        print(line)
        report["steps"][name] = {"ms": seconds * 1e3, "ratio": ratio, "tflops": achieved, "mfu": mfu}
    # The RM's cost is fixed (it reads the 6561-way codebook at every speech position): it is negligible next to a
    # 0.5B policy but comparable to a toy one, so the targets speak about the real size.
    print(
        f"RM / policy parameters touched per speech token: {rm_compute / 1e6:.1f}M / {policy_compute / 1e6:.1f}M "
        f"({rm_compute / policy_compute:.0%}); the targets are stated for CosyVoice2-0.5B size (--size 0.5b)."
    )

    names = list(phases)
    print(f"\nper-phase wall time, ms per step (mean of {cli.phase_repeats} phase-timed steps, synced per phase)")
    print(f"| phase | {' | '.join(names)} |")
    print("|---|" + "---:|" * len(names))
    for phase in PHASES:
        values = [phases[name].totals.get(phase, 0.0) * 1e3 / max(cli.phase_repeats, 1) for name in names]
        if not any(values):
            continue
        print(f"| {phase} | {' | '.join(f'{value:.1f}' for value in values)} |")
        report["phases_ms"][phase] = dict(zip(names, values))
    totals = [sum(phases[name].totals.values()) * 1e3 / max(cli.phase_repeats, 1) for name in names]
    print(f"| total | {' | '.join(f'{value:.1f}' for value in totals)} |")

    if memory:
        base = memory["full FT, beta=0"]["peak_bytes"]
        measure = next(iter(memory.values()))["measure"]
        print(f"\npeak memory of {cli.memory_steps} optimizer steps, one subprocess each ({measure}):")
        for label, row in memory.items():
            ratio = row["peak_bytes"] / base
            line = f"{label:>18}: {row['peak_bytes'] / 2**30:7.2f} GiB  x{ratio:.3f} of full FT beta=0"
            if label.startswith("full FT, beta=") and label != "full FT, beta=0":
                line += f"  (target <= 1.35: {'met' if ratio <= 1.35 else 'NOT met'})"
            print(line)
    return report


# ---------------------------------------------------------------------------------------------------- reward costs


def make_multitask_reward_model(cli, tasks, seed: int, dtype, device) -> RobustSERForMultiTaskReward:
    """A multi-task RM of the emotion RM's size; its ASR head reads 40 symbols `s0`..`s39`."""
    torch.manual_seed(seed)
    config = RobustMultiTaskRMConfig(
        vocab_size=cli.codebook_size,
        hidden_size=cli.rm_hidden_size,
        num_hidden_layers=cli.rm_layers,
        num_attention_heads=4,
        intermediate_size=4 * cli.rm_hidden_size,
        max_position_embeddings=max(cli.speech_len, 16),
        tasks=list(tasks),
        asr_labels=[f"s{i}" for i in range(40)] if "asr" in tasks else None,
    )
    return RobustSERForMultiTaskReward(config).to(device=device, dtype=dtype)


def transcripts(cli) -> list[str]:
    """One random transcript of `asr_symbols` symbols per sample, never one symbol twice in a row, so that each has a
    CTC alignment within its speech (3/4 to full `speech_len`)."""
    generator = torch.Generator().manual_seed(cli.seed + 1)
    texts = []
    for _ in range(cli.batch_size):
        symbols = [int(torch.randint(0, 40, (1,), generator=generator))]
        while len(symbols) < cli.asr_symbols:
            symbols.append((symbols[-1] + int(torch.randint(1, 40, (1,), generator=generator))) % 40)
        texts.append(" ".join(f"s{symbol}" for symbol in symbols))
    return texts


def measure_reward_costs(cli, policy, reward_model, tokenizer, diffro_batch) -> dict:
    """Step time of each reward configuration over the single emotion reward step (interleaved, one run); prints it."""
    dtype, device = DTYPES[cli.dtype], cli.device
    batch = {**diffro_batch, "texts": transcripts(cli)}
    both = make_multitask_reward_model(cli, ("asr", "quality"), cli.seed + 11, dtype, device)
    asr_only = make_multitask_reward_model(cli, ("asr",), cli.seed + 12, dtype, device)
    quality_only = make_multitask_reward_model(cli, ("quality",), cli.seed + 13, dtype, device)
    members = [reward_model]
    for k in (1, 2):
        torch.manual_seed(cli.seed + 20 + k)
        members.append(make_emotion_reward_model(cli).to(device=device, dtype=dtype))
    # Threshold at the median ASR reward of the batch's own tokens: the gate passes about half of the samples.
    with torch.no_grad():
        one_hot = torch.nn.functional.one_hot(batch["speech_ids"], cli.codebook_size).to(dtype)
        asr_rewards = -ASRReward(asr_only)(one_hot, batch["speech_attention_mask"], batch)
    gate = dict(reward_gate="asr", reward_gate_threshold=asr_rewards.median().item(), reward_gate_temperature=0.0)
    kinds = {
        "emotion (1 RM)": dict(reward_model=reward_model),
        "+ asr": dict(reward_model=reward_model, reward_funcs=[ASRReward(asr_only)]),
        "+ quality": dict(reward_model=reward_model, reward_funcs=[QualityReward(quality_only)]),
        "+ asr + quality": dict(reward_model=reward_model, reward_funcs=[both]),
        "3-RM ensemble": dict(reward_model=members, reward_aggregation="min"),
        "+ asr, asr gate": dict(reward_model=reward_model, reward_funcs=[ASRReward(asr_only)], **gate),
    }
    times = {name: [] for name in kinds}
    gate_weights = []
    with tempfile.TemporaryDirectory() as output_dir:
        trainers = {
            name: make_trainer(policy, kind.pop("reward_model"), tokenizer, cli, 0.0, output_dir, **kind)
            for name, kind in kinds.items()
        }
        for repeat in tqdm(range(cli.warmup + cli.repeats), desc="reward configurations"):
            for name, trainer in trainers.items():
                policy.zero_grad(set_to_none=True)
                synchronize(device)
                start = time.perf_counter()
                trainer.training_step(trainer.model, dict(batch))
                synchronize(device)
                if repeat >= cli.warmup:
                    times[name].append(time.perf_counter() - start)
        policy.zero_grad(set_to_none=True)
        names = {name: trainer.reward_func_names for name, trainer in trainers.items()}
        gate_weights = trainers["+ asr, asr gate"]._metrics.get("gate_weight", [])
        del trainers
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["emotion (1 RM)"]
    print(
        f"\ncost of each extra reward (beta=0, RRPO alpha {cli.reward_adv_alpha}; each extra RM hidden "
        f"{cli.rm_hidden_size} x {cli.rm_layers} layers; ASR transcripts of {cli.asr_symbols} symbols; median of "
        f"{cli.repeats} after {cli.warmup} warm-up, interleaved in one run)"
    )
    report = {}
    for name, seconds in medians.items():
        ratio = seconds / base
        print(f"{name:>16}: {seconds * 1e3:9.2f} ms  x{ratio:5.3f} of the single-reward step   {names[name]}")
        report[name] = {"ms": seconds * 1e3, "ratio": ratio, "reward_functions": names[name]}
    if gate_weights:
        print(f"(the gate passed {sum(gate_weights) / len(gate_weights):.0%} of the samples)")
    return report


def main():
    cli = parse_args()
    if cli.threads:
        torch.set_num_threads(cli.threads)
    if cli.memory_child:
        print(json.dumps(memory_child(cli)))
        return
    dtype, device = DTYPES[cli.dtype], cli.device
    tokenizer = build_tiny_cosyvoice2_tokenizer(instruction_words("en") + ["ka", "mi", "to"])
    policy, reward_model = build_models(cli, dtype, device, len(tokenizer))
    base_policy = policy
    if cli.lora:
        from peft import get_peft_model

        # One adapter shared by all step kinds; the beta > 0 trainer adds its frozen "ref" copy of it.
        policy = get_peft_model(policy, lora_config(cli))
    batches = make_batch(cli, base_policy.config.llm_config.vocab_size, device)
    report = {"args": vars(cli)}
    if not cli.only_reward_costs:
        report.update(measure_step_kinds(cli, policy, base_policy, reward_model, tokenizer, batches))
    if not cli.skip_reward_costs:
        report["reward_costs"] = measure_reward_costs(cli, policy, reward_model, tokenizer, batches[1])
    if cli.json:
        with open(cli.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
