#!/usr/bin/env bash
# One-call GPU check of the DiffRO / RRPO stack on a randomly initialised CosyVoice2-0.5B-shaped policy and a
# recipe-sized reward model (D=512, 6 layers: recipes/cosyvoice2-0.5b/rm_robust.yaml); nothing is downloaded.
# Prints one table: bf16 LoRA and full DiffRO steps (beta = 0.1, offline and online rollouts) with their ratio to a
# plain SFT step and MFU, the robust RM step, generation tokens/s at batch 1, 16 and 64, and peak memory.
# About 5-8 minutes on one H200.
#
#   bash benchmarks/gpu_check.sh                          # on a GPU machine with the project's dependencies
#   WHEELS=./wheels bash benchmarks/gpu_check.sh          # bare machine: install what is missing from ./wheels
#   DEVICE=cpu bash benchmarks/gpu_check.sh --dry-run     # tiny shapes on CPU: checks the plumbing in ~1-2 min
#
# Options: --dry-run (tiny shapes, few repeats), --peak_tflops N (MFU denominator; default 790, the dense bf16
# figure this project states H200 MFU against), --out DIR (JSON and logs; default outputs/gpu_check).
#
# Building the wheel folder on a connected machine with the GPU machine's Python version and platform
# (e.g. CPython 3.11, x86_64 Linux):
#   pip download -d wheels --python-version 3.11 --platform manylinux2014_x86_64 --only-binary=:all: \
#       -r requirements.txt            # or: pip download -d wheels . (the project's own dependencies)
#   pip wheel --no-deps -w wheels .    # the project itself
# Copy `wheels/` next to the checkout; torch itself is expected on the GPU machine (a CUDA build is large), but
# a torch wheel placed in the folder is installed too when torch is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-}"  # default: the checkout's .venv when it has one, else `python` on PATH
if [[ -z "$PYTHON" ]]; then if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi; fi
DEVICE="${DEVICE:-cuda}"
WHEELS="${WHEELS:-}"
PEAK_TFLOPS=790
OUT=outputs/gpu_check
DRY_RUN=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --peak_tflops) PEAK_TFLOPS="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --wheels) WHEELS="$2"; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$OUT"

# ---- install what a bare machine lacks, from the wheel folder only (no index)
missing=()
for module in torch transformers accelerate datasets trl peft deepspeed tqdm huggingface_hub; do
    "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)" \
        || missing+=("$module")
done
if ! "$PYTHON" -c "import rrpo_hf" 2>/dev/null; then missing+=("rrpo-hf"); fi
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ -z "$WHEELS" ]]; then
        echo "gpu_check.sh: missing ${missing[*]}; pass WHEELS=<wheel folder> (see the header: pip download)." >&2
        exit 1
    fi
    echo "installing from $WHEELS: ${missing[*]}"
    packages=("${missing[@]/rrpo-hf/}")
    if [[ " ${missing[*]} " == *" rrpo-hf "* ]]; then
        wheel=$(ls "$WHEELS"/rrpo_hf-*.whl 2>/dev/null | head -n 1 || true)
        packages+=("${wheel:-.}")  # the project's own wheel, else this checkout (its dependencies from $WHEELS)
    fi
    "$PYTHON" -m pip install --no-index --find-links "$WHEELS" ${packages[@]}
fi

# ---- shapes
if [[ $DRY_RUN == 1 ]]; then
    POLICY=(--size small --batch_size 2 --text_len 16 --speech_len 32 --warmup 1 --repeats 2 --phase_repeats 1
            --rm_hidden_size 64 --rm_layers 2)
    RM=(--hidden_size 64 --num_layers 2 --batch_size 4 --seq_len 64 --warmup 1 --repeats 2)
    GEN=(--size tiny --new-tokens 16 --repeats 1 --skip-uncached)
    DTYPE=fp32
    [[ "$DEVICE" == cpu ]] && POLICY+=(--skip_memory)
else
    POLICY=(--size 0.5b --batch_size 16 --text_len 32 --speech_len 250 --warmup 3 --repeats 10 --phase_repeats 2
            --rm_hidden_size 512 --rm_layers 6)
    RM=(--hidden_size 512 --num_layers 6 --num_heads 8 --batch_size 16 --seq_len 250 --warmup 3 --repeats 15)
    GEN=(--size 0.5b --new-tokens 200 --repeats 2 --skip-uncached)
    DTYPE=bf16
fi
[[ "$DEVICE" == cpu ]] && DTYPE=fp32
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

run() {  # run <log name> <command...>: output to $OUT/<name>.log, failure stops the check with the log's tail
    local name="$1"; shift
    echo "[$(date +%H:%M:%S)] $name"
    if ! "$@" >"$OUT/$name.log" 2>&1; then
        tail -n 30 "$OUT/$name.log" >&2
        echo "gpu_check.sh: '$name' failed (log: $OUT/$name.log)" >&2
        exit 1
    fi
}

start=$(date +%s)
for tuning in full lora; do
    for rollout in offline online; do
        extra=()
        [[ $tuning == lora ]] && extra+=(--lora --skip_memory)  # the full-FT run already measures LoRA's peak
        # Online steps generate up to speech_len tokens each: fewer of them keep the check within ~8 minutes.
        [[ $rollout == online ]] && extra+=(--skip_memory --warmup 1 --repeats 3 --phase_repeats 1)
        run "diffro_${tuning}_${rollout}" "$PYTHON" benchmarks/diffro_step.py "${POLICY[@]}" --device "$DEVICE" \
            --dtype "$DTYPE" --beta 0.1 --rollout "$rollout" --peak_tflops "$PEAK_TFLOPS" "${extra[@]}" \
            --json "$OUT/diffro_${tuning}_${rollout}.json"
    done
done
run rm_step "$PYTHON" benchmarks/rm_step.py "${RM[@]}" --device "$DEVICE"
run generation_b16 "$PYTHON" benchmarks/generation.py "${GEN[@]}" --device "$DEVICE" --dtype "$DTYPE" \
    --batch-size 16 --json "$OUT/generation_b16.json"
run generation_b64 "$PYTHON" benchmarks/generation.py "${GEN[@]}" --device "$DEVICE" --dtype "$DTYPE" \
    --batch-size 64 --json "$OUT/generation_b64.json"

# ---- one table
"$PYTHON" - "$OUT" "$(( $(date +%s) - start ))" <<'PY'
import json, re, sys
from pathlib import Path

out, elapsed = Path(sys.argv[1]), sys.argv[2]
rows = []
for tuning in ("full", "lora"):
    for rollout in ("offline", "online"):
        report = json.loads((out / f"diffro_{tuning}_{rollout}.json").read_text())
        args = report["args"]
        for name, step in report["steps"].items():
            if name == "plain" and rollout == "online":
                continue  # the same teacher-forced SFT step as the offline run
            mfu = f"{step['mfu']:.1%}" if step["mfu"] is not None else "n/a"
            what = "SFT step (plain CE)" if name == "plain" else f"DiffRO {name.split()[1]}, {rollout}"
            rows.append((f"{tuning}: {what}", f"{step['ms']:.1f} ms", f"x{step['ratio']:.3f} of SFT",
                         f"{step['tflops']:.1f} TFLOP/s, MFU {mfu}"))
        for label, memory in report.get("memory", {}).items():
            rows.append((f"peak memory, {label}", f"{memory['peak_bytes'] / 2**30:.2f} GiB", memory["measure"], ""))
rm_log = (out / "rm_step.log").read_text()
ratio = re.search(r"robust / vanilla = ([0-9.]+)", rm_log).group(1)
robust_ms = re.search(r"robust step .*median ([0-9.]+) ms", rm_log).group(1)
rows.append(("robust RM step (LS + EAM + Adv)", f"{robust_ms} ms", f"x{ratio} of vanilla", ""))
single = None
for batch in (16, 64):
    results = json.loads((out / f"generation_b{batch}.json").read_text())["results"]
    single = single or results["cached_single"]
    tokens_per_second = results["cached_batched"]["tokens_per_second"]
    rows.append((f"generation, batch {batch}", f"{tokens_per_second:.0f} tokens/s", "", ""))
rows.insert(len(rows) - 2, ("generation, batch 1", f"{single['tokens_per_second']:.0f} tokens/s", "", ""))
print(f"\n| measurement ({args['size']}, {args['dtype']}, {args['device']}, peak {report['peak_tflops']} TFLOP/s) "
      f"| value | relative | throughput |")
print("|---|---:|---:|---:|")
for row in rows:
    print("| " + " | ".join(row) + " |")
print(f"\nwall time {elapsed} s; logs and JSON in {out}")
PY
