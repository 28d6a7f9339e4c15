"""One overview of reward-hacking studies run one preset at a time: the headline comparisons of every preset, then
every row's paired difference against DiffRO, read from each study's ``results.json``.

    python examples/study_overview.py outputs/study_15seeds/dataset-bias outputs/study_15seeds/brittle
    python examples/study_overview.py outputs/study_15seeds/* --output outputs/study_15seeds/overview.md

Each argument is a study's output folder (or its ``results.json``). `examples/reward_hacking_study.py --preset all`
writes the same overview itself; this script joins studies run separately (other machines, other days).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rrpo_hf.study import render_presets_overview
from rrpo_hf.utils.saving import atomic_write_text


def read_study(path: Path) -> tuple[str, dict, int]:
    """(preset, summary, number of seeds) of one study's results; a clear error for a folder that has none."""
    results_file = path if path.is_file() else path / "results.json"
    if not results_file.is_file():
        sys.exit(f"error: {path} holds no results.json; pass the output_dir of a finished study.")
    results = json.loads(results_file.read_text())
    config = results["config"]
    return config["preset"], results["summary"], len(config["seeds"])


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+", type=Path, help="output folders (or results.json files) of studies")
    parser.add_argument("--output", type=Path, help="also write the overview to this Markdown file")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    return parser


def main(argv: list[str] | None = None) -> str:
    args = make_parser().parse_args(argv)
    if args.output is not None and args.output.exists() and not args.overwrite:
        sys.exit(f"error: {args.output} exists; pass --overwrite to replace it, or choose another --output.")
    summaries, seeds = {}, {}
    for path in args.studies:
        preset, summary, num_seeds = read_study(path)
        if preset in summaries:
            sys.exit(f"error: two studies of preset {preset!r} ({path} and an earlier one); pass one per preset.")
        summaries[preset], seeds[preset] = summary, num_seeds
    overview = render_presets_overview(summaries, seeds)
    print(overview)
    if args.output is not None:
        atomic_write_text(args.output, overview)
        print(f"Overview: {args.output}")
    return overview


if __name__ == "__main__":
    main()
