"""Throughput of CosyVoice2LM speech-token generation: KV cache vs recomputation, batch vs one at a time.

All figures come from one run on one machine, so the ratios are comparable even when absolute numbers
are not. Every configuration decodes exactly ``--new-tokens`` tokens per sample (min = max length), with
CosyVoice2's repetition-aware sampling, so the work is identical across configurations.

    python benchmarks/generation.py                                   # tiny config, CPU
    python benchmarks/generation.py --size 0.5b --dtype bf16 --device cuda   # CosyVoice2-0.5B shape, random weights
    python benchmarks/generation.py --threads 1 --profile             # + per-phase split and top ops per step

Targets (tiny, CPU): cached >= 5x uncached at 200 tokens; batch 16 >= 12x batch 1 in tokens/s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch

import rrpo_hf.models.cosyvoice2.generation as generation_module
from rrpo_hf.models.cosyvoice2.configuration_cosyvoice2 import COSYVOICE2_0_5B_BACKBONE, CosyVoice2LMConfig
from rrpo_hf.models.cosyvoice2.generation import generate_speech_tokens
from rrpo_hf.models.cosyvoice2.modeling_cosyvoice2 import CosyVoice2LM


#: A testbed-sized policy: the shape the toy SFT / RRPO examples train on CPU.
TINY_BACKBONE = dict(
    vocab_size=256,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_policy(size: str, dtype: torch.dtype, device: str, attn_implementation: str) -> CosyVoice2LM:
    if size == "tiny":
        config = CosyVoice2LMConfig(llm_config=dict(TINY_BACKBONE), speech_token_size=512)
    else:
        config = CosyVoice2LMConfig(llm_config=dict(COSYVOICE2_0_5B_BACKBONE), speech_token_size=6561)
    config.llm_config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    with torch.device(device):
        model = CosyVoice2LM(config)
    return model.to(dtype=dtype).eval()


def make_prompts(batch_size: int, text_vocab: int, seed: int) -> list[list[int]]:
    """Prompts of different lengths (8..24 tokens) so that left padding is exercised."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 25, (batch_size,), generator=generator)
    return [torch.randint(0, text_vocab, (int(n),), generator=generator).tolist() for n in lengths]


def measure(model, configurations: dict, new_tokens: int, device: str, repeats: int) -> dict:
    """Best of `repeats` timed runs of each configuration (after one warm-up each), decoding exactly `new_tokens`.

    `configurations` maps a name to `(prompts, use_cache)`. The configurations take turns, run by run, so that load
    from other processes on a shared machine falls on all of them alike and their ratio stays comparable.
    """

    def run(prompts, use_cache):
        return generate_speech_tokens(
            model, prompts, seed=0, use_cache=use_cache, min_new_tokens=new_tokens, max_new_tokens=new_tokens
        )

    for prompts, use_cache in configurations.values():
        run(prompts, use_cache)  # warm-up: allocator, kernels, autotuning
    best = dict.fromkeys(configurations, float("inf"))
    for _ in range(repeats):
        for name, (prompts, use_cache) in configurations.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            outputs = run(prompts, use_cache)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
            produced = sum(len(tokens) for tokens in outputs)
            if produced != new_tokens * len(prompts):
                raise RuntimeError(f"{name}: expected {new_tokens * len(prompts)} tokens, got {produced}")
    return {
        name: {
            "batch_size": len(prompts),
            "use_cache": use_cache,
            "new_tokens": new_tokens,
            "seconds": best[name],
            "tokens_per_second": new_tokens * len(prompts) / best[name],
        }
        for name, (prompts, use_cache) in configurations.items()
    }


@contextlib.contextmanager
def _phase_timers(model, totals: dict):
    """Accumulate wall time of the decode loop's phases (backbone, speech head, sampling) into `totals`."""

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    sample = generation_module._ras_sample
    model.model.forward = timed("backbone", model.model.forward)
    model.speech_logits = timed("speech head", model.speech_logits)
    generation_module._ras_sample = timed("sampling", sample)
    try:
        yield
    finally:
        del model.model.forward, model.speech_logits  # drop the instance attributes: the class methods come back
        generation_module._ras_sample = sample


def profile(model, prompts, new_tokens: int, device: str) -> dict[str, float]:
    """Print per-step time split into phases and torch.profiler's top ops, for one (warmed-up) cached decode.

    Returns the per-step milliseconds of each phase and of the whole step (`"step"`).
    """

    def run():
        return generate_speech_tokens(model, prompts, seed=0, min_new_tokens=new_tokens, max_new_tokens=new_tokens)

    run()
    totals: dict[str, float] = {}
    with _phase_timers(model, totals):
        start = time.perf_counter()
        run()
        total = time.perf_counter() - start
    totals["other (masks, bookkeeping)"] = total - sum(totals.values())
    split = ", ".join(f"{name} {seconds * 1e3 / new_tokens:.2f}" for name, seconds in totals.items())
    print(f"batch {len(prompts)}: {total * 1e3 / new_tokens:.2f} ms/step = {split}")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        run()
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return {"step": total * 1e3 / new_tokens, **{name: seconds * 1e3 / new_tokens for name, seconds in totals.items()}}


def print_batching_ceiling(batched: dict[str, float], single: dict[str, float], batch_size: int) -> None:
    """The batch/single ratio the decode loop could reach if nothing outside the backbone grew with the batch.

    The backbone's own growth (its matmuls, attention and masks over `batch_size` rows) is transformers' Qwen2 code,
    not the loop's; this bounds what trimming the loop can buy.
    """
    outside = single["step"] - single["backbone"]
    ceiling = batch_size * single["step"] / (batched["backbone"] + outside)
    print(
        f"backbone step: batch {batch_size} {batched['backbone']:.2f} ms vs batch 1 {single['backbone']:.2f} ms "
        f"({batched['backbone'] / single['backbone']:.2f}x); loop outside it: "
        f"{batched['step'] - batched['backbone']:.2f} "
        f"vs {outside:.2f} ms"
    )
    print(
        f"ceiling batch{batch_size}_vs_batch1 with the loop outside the backbone as cheap as at batch 1: "
        f"{ceiling:.1f}x "
        f"(measured {batch_size * single['step'] / batched['step']:.1f}x in the profiled runs)"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--size", choices=["tiny", "0.5b"], default="tiny", help="tiny testbed policy or CosyVoice2-0.5B shape"
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--attn-implementation", default="sdpa", help="backbone attention (sdpa, eager, flash_attention_2)"
    )
    parser.add_argument("--new-tokens", type=int, default=200, help="tokens decoded per sample")
    parser.add_argument("--batch-size", type=int, default=16, help="the batched configuration")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cached configuration (best is kept)")
    parser.add_argument("--uncached-repeats", type=int, default=1, help="timed runs of the slow uncached loop")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip-uncached", action="store_true", help="skip the slow recompute-everything loop")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--profile", action="store_true", help="also print the per-phase split and top ops per step")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_policy(args.size, DTYPES[args.dtype], args.device, args.attn_implementation)
    text_vocab = model.config.llm_config.vocab_size
    batched_prompts = make_prompts(args.batch_size, text_vocab, seed=0)
    single_prompt = batched_prompts[:1]
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"CosyVoice2LM size={args.size} params={n_params / 1e6:.1f}M dtype={args.dtype} device={args.device} "
        f"attn={args.attn_implementation} threads={torch.get_num_threads()} new_tokens={args.new_tokens}"
    )

    cached = {"cached_batched": (batched_prompts, True), "cached_single": (single_prompt, True)}
    results = measure(model, cached, args.new_tokens, args.device, args.repeats)
    if not args.skip_uncached:
        uncached = {"uncached_batched": (batched_prompts, False)}
        results.update(measure(model, uncached, args.new_tokens, args.device, args.uncached_repeats))

    print(f"{'configuration':<18}{'batch':>6}{'cache':>7}{'seconds':>10}{'tokens/s':>12}")
    for name, row in results.items():
        print(
            f"{name:<18}{row['batch_size']:>6}{str(row['use_cache']):>7}{row['seconds']:>10.3f}{row['tokens_per_second']:>12.1f}"
        )
    ratios = {
        f"batch{args.batch_size}_vs_batch1": results["cached_batched"]["tokens_per_second"]
        / results["cached_single"]["tokens_per_second"]
    }
    if "uncached_batched" in results:
        ratios["cached_vs_uncached"] = (
            results["cached_batched"]["tokens_per_second"] / results["uncached_batched"]["tokens_per_second"]
        )
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.1f}x")
    if args.profile:
        batched, single = (
            profile(model, prompts, args.new_tokens, args.device) for prompts in (batched_prompts, single_prompt)
        )
        print_batching_ceiling(batched, single, args.batch_size)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "results": results, "ratios": ratios}, handle, indent=2)
    return results, ratios


if __name__ == "__main__":
    main()
