"""The exploitability audit of the study's reward models: one seed of each preset, RMs only (no SFT, no policy).

Builds each preset's corpora and RM rows exactly as `rrpo_hf.study.stages.run_seed` does (same corpora, same
`train_reward_model`, the +FT / +LS / +EAM / +Adv rows of `paper-protocol` fine-tuning its base RM), then runs the
study's audit (`stages.run_audit`) on each RM row and prints one table per preset; `--output_dir` also gets
`audit_<preset>.json` and the plots. docs/audit.md quotes its output.

    python benchmarks/audit_study_rms.py --output_dir outputs/audit_study             # every preset, seed 0
    python benchmarks/audit_study_rms.py --presets dataset-bias brittle --seed 1 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from rrpo_hf.audit import format_audit_table, plot_audit, write_audit
from rrpo_hf.study import STUDY_PRESETS, RewardHackingStudyConfig, stages
from rrpo_hf.study.config import CLEAN_CORPUS_VARIANTS, FINETUNED_VARIANTS
from rrpo_hf.testbed import EmotionWorld


#: Extra columns printed beside the audit's table: the per-frame norm and the FGM gains at relative radii.
SCALE_COLUMNS = {
    "hidden_norm_utterance": ("‖h'‖ utt.", 1),
    "hidden_norm_frame": ("‖h'‖ frame", 2),
    "adv_epsilon_over_hidden_norm": ("ε_adv/‖h'‖", 4),
    "hidden_shift_per_edit": ("‖Δh'‖ / edit", 2),
    "fgm_gain": ("FGM Δlog P @ε_adv", 4),
    "fgm_delta_p": ("FGM ΔP @ε_adv", 4),
    "fgm_gain@rel0.01": ("@1%‖h'‖", 4),
    "fgm_gain@rel0.05": ("@5%‖h'‖", 3),
    "fgm_gain@rel0.1": ("@10%‖h'‖", 3),
}


def audit_preset(name: str, seed: int, output_dir: Path | None, workdir: str) -> dict[str, dict]:
    cfg = RewardHackingStudyConfig.from_preset(name)
    world = EmotionWorld(cfg.testbed_config())
    corpora = stages.build_corpora(cfg, world, seed)
    audit_dataset = stages.build_audit_dataset(cfg, world, seed)
    models, rows = {}, {}
    for variant in cfg.rm_variants:
        start = time.perf_counter()
        corpus, pretrained = corpora["rm"], None
        if variant in CLEAN_CORPUS_VARIANTS:
            corpus = corpora["clean"]
        elif variant in FINETUNED_VARIANTS and corpora["finetune"] is not None:
            corpus, pretrained = corpora["finetune"], models["base"]
        models[variant], _ = stages.train_reward_model(
            cfg,
            variant,
            corpus,
            {"alpha": corpora["domains"]["alpha"]},
            seed,
            f"{workdir}/{name}/{variant}",
            pretrained,
        )
        trained = time.perf_counter()
        rows[variant] = stages.run_audit(cfg, models[variant], audit_dataset, world, seed)
        print(
            f"[{name}] {variant}: RM {trained - start:.0f} s, audit {time.perf_counter() - trained:.0f} s", flush=True
        )
    print(f"\n### {name} (seed {seed})\n\n{format_audit_table(rows)}\n\n{format_audit_table(rows, SCALE_COLUMNS)}\n")
    if output_dir is not None:
        folder = output_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        write_audit([{"reward_model": variant, **row} for variant, row in rows.items()], folder, {"seed": seed})
        plot_audit(rows, folder)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(STUDY_PRESETS), choices=list(STUDY_PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (the study's threads_per_seed).")
    parser.add_argument("--output_dir", default=None, help="Where audit.json and plots go (per preset).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir) if args.output_dir else None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.presets:
            audit_preset(name, args.seed, output_dir, workdir)
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
