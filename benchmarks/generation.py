"""Throughput of CosyVoice2LM speech-token generation: KV cache vs recomputation, batch vs one at a time.

All figures come from one run on one machine, so the ratios are comparable even when absolute numbers
are not. Every configuration decodes exactly ``--new-tokens`` tokens per sample (min = max length), with
CosyVoice2's repetition-aware sampling, so the work is identical across configurations.

    python benchmarks/generation.py                                   # tiny config, CPU
    python benchmarks/generation.py --size 0.5b --dtype bf16 --device cuda   # CosyVoice2-0.5B shape, random weights

Targets (tiny, CPU): cached >= 5x uncached at 200 tokens; batch 16 >= 8x batch 1 in tokens/s.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

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


def measure(model, prompts, new_tokens: int, use_cache: bool, device: str, repeats: int) -> dict:
    """Best of `repeats` timed runs (after one warm-up) of decoding exactly `new_tokens` per prompt."""

    def run():
        return generate_speech_tokens(
            model, prompts, seed=0, use_cache=use_cache, min_new_tokens=new_tokens, max_new_tokens=new_tokens
        )

    run()  # warm-up: allocator, kernels, autotuning
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    produced = sum(len(tokens) for tokens in outputs)
    if produced != new_tokens * len(prompts):
        raise RuntimeError(f"expected {new_tokens * len(prompts)} tokens, got {produced}")
    return {
        "batch_size": len(prompts),
        "use_cache": use_cache,
        "new_tokens": new_tokens,
        "seconds": best,
        "tokens_per_second": produced / best,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "0.5b"], default="tiny", help="tiny testbed policy or CosyVoice2-0.5B shape")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--attn-implementation", default="sdpa", help="backbone attention (sdpa, eager, flash_attention_2)")
    parser.add_argument("--new-tokens", type=int, default=200, help="tokens decoded per sample")
    parser.add_argument("--batch-size", type=int, default=16, help="the batched configuration")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per configuration (best is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip-uncached", action="store_true", help="skip the slow recompute-everything loop")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
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

    results = {
        "cached_batched": measure(model, batched_prompts, args.new_tokens, True, args.device, args.repeats),
        "cached_single": measure(model, single_prompt, args.new_tokens, True, args.device, args.repeats),
    }
    if not args.skip_uncached:
        results["uncached_batched"] = measure(model, batched_prompts, args.new_tokens, False, args.device, args.repeats)

    print(f"{'configuration':<18}{'batch':>6}{'cache':>7}{'seconds':>10}{'tokens/s':>12}")
    for name, row in results.items():
        print(f"{name:<18}{row['batch_size']:>6}{str(row['use_cache']):>7}{row['seconds']:>10.3f}{row['tokens_per_second']:>12.1f}")
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
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "results": results, "ratios": ratios}, handle, indent=2)
    return results, ratios


if __name__ == "__main__":
    main()
