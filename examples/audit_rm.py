"""Audit reward models for exploitability before spending GPU days optimising a policy against them.

    python examples/audit_rm.py --reward_model outputs/rm_base outputs/rm_rrpo --dataset_name data/esd_tokens \
        --target_emotion angry --output_dir outputs/audit
    python examples/audit_rm.py --config recipe.yaml        # the same arguments from a YAML file

For each reward model (a folder saved by `examples/train_rm.py`, an emotion classifier or a multi-task RM with an
emotion head, or a Hub id) the audit attacks it white-box on the target-emotion utterances of the dataset, the
operating point of a policy asked for that emotion: greedy token edits chosen by the exact reward (HotFlip
candidates), the DiffRO path (straight-through Gumbel-Softmax on free per-position logits against the reward
function `DiffROTrainer` would use), one FGM step on h' at the RM's own ε_adv and at radii relative to ‖h'‖, the
insertion of artifact ids, and, where the dataset has an `intensity` column, the response of P(target) to the
emotion's strength. docs/audit.md says what each figure means and how to read it.

A dataset is a `save_to_disk` folder, a JSONL file, or a Hub id, with `speech_tokens` and an `emotion` column
(ClassLabel ids or names); `--dataset_split` picks a split of a DatasetDict. Artifact / rare ids are `--artifact_ids`
when given, else the ids whose share of the tokens of `--reference_dataset` (default: the audited rows) is below
`--rare_token_share` (default 0.1 / vocab_size).

Writes to --output_dir: `audit.json` (`{"models": [{"reward_model": DIR, ...}, ...], "settings": {...}}`),
`audit.md` (the table) and the plots `audit_gain_curve.png` and `audit_intensity.png`. Runs on CPU or GPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rrpo_hf.audit import (
    AuditConfig,
    audit_reward_model,
    format_audit_table,
    load_audit_model,
    plot_audit,
    write_audit,
)
from rrpo_hf.script_utils import ScriptParser
from rrpo_hf.utils.saving import atomic_write_text


logger = logging.getLogger(__name__)


@dataclass
class AuditScriptArguments:
    reward_model: list[str] = field(
        metadata={"help": "Reward-model folders (train_rm.py output) or Hub ids; one row each. Required."}
    )
    dataset_name: str = field(
        metadata={"help": "Speech-token dataset: a `save_to_disk` folder, a JSONL file or a Hub id. Required."}
    )
    dataset_split: str = field(
        default="test",
        metadata={"help": "Split of a DatasetDict to audit on (default `test`); ignored for a single Dataset."},
    )
    reference_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Natural speech that decides the rare ids (ideally the RM's training data; its "
            "`--dataset_split` split, or every row). Default (None): the audited rows."
        },
    )
    output_dir: str = field(default="outputs/audit", metadata={"help": "Where audit.json, audit.md and plots go."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace the audit files of an earlier run in --output_dir."}
    )
    tokens_column: str = field(default="speech_tokens", metadata={"help": "Speech-token column."})
    emotion_column: str = field(default="emotion", metadata={"help": "Emotion column (ClassLabel or names)."})
    intensity_column: str = field(
        default="intensity", metadata={"help": "Emotion-strength column, for the intensity response (if present)."}
    )
    device: str | None = field(default=None, metadata={"help": "Device of the models. Default (None): CUDA if any."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Load reward models that ship their modeling code (remote code)."}
    )


def load_rows(source: str, split: str):
    """One `datasets.Dataset`: a `save_to_disk` folder, a JSON / JSONL file or a Hub id (a DatasetDict's ``split``)."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    if os.path.isdir(source):
        dataset = load_from_disk(source)
    elif os.path.isfile(source) and source.endswith((".jsonl", ".json")):
        dataset = load_dataset("json", data_files=source, split="train")
    else:
        dataset = load_dataset(source)
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise SystemExit(
                f"error: dataset {source} has no split {split!r} (its splits: {sorted(dataset)}); pass "
                "--dataset_split."
            )
        dataset = dataset[split]
    return dataset


def main(args: AuditScriptArguments, audit: AuditConfig) -> dict:
    import torch

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output_dir = Path(args.output_dir)
    planned = [output_dir / name for name in ("audit.json", "audit.md", "audit_gain_curve.png", "audit_intensity.png")]
    existing = [str(path) for path in planned if path.exists()]
    if existing and not args.overwrite_output_dir:
        raise SystemExit(
            f"error: --output_dir {output_dir} already holds {', '.join(existing)}. Pass --overwrite_output_dir to "
            "replace them, or pick another --output_dir."
        )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dataset = load_rows(args.dataset_name, args.dataset_split)
    if args.tokens_column not in dataset.column_names:
        raise SystemExit(
            f"error: dataset {args.dataset_name} has no `{args.tokens_column}` column (columns: "
            f"{dataset.column_names}); pass --tokens_column."
        )
    reference = None
    if args.reference_dataset is not None:
        reference = load_rows(args.reference_dataset, args.dataset_split)[args.tokens_column]

    rows, named = [], {}
    for path in args.reward_model:
        logger.info("Auditing %s", path)
        try:
            model = load_audit_model(path, device, args.trust_remote_code)
        except (OSError, ValueError, TypeError) as error:
            raise SystemExit(
                f"error: reward model {path} does not load as an emotion reward model: {error}. Pass a folder saved "
                "by examples/train_rm.py (or a Hub id), with --trust_remote_code true if it ships its code."
            ) from None
        try:
            row = audit_reward_model(
                model,
                dataset,
                audit,
                reference_tokens=reference,
                tokens_column=args.tokens_column,
                emotion_column=args.emotion_column,
                intensity_column=args.intensity_column,
            )
        except ValueError as error:
            raise SystemExit(f"error: {path}: {error}") from None
        rows.append({"reward_model": path, **row})
        named[path] = row
        del model

    output_dir.mkdir(parents=True, exist_ok=True)
    settings = {**asdict(args), **asdict(audit)}
    write_audit(rows, output_dir, settings)
    table = format_audit_table(named)
    atomic_write_text(output_dir / "audit.md", table + "\n")
    plots = plot_audit(named, output_dir)
    print(table)
    print(f"Wrote {output_dir / 'audit.json'}, {output_dir / 'audit.md'} and {', '.join(plots)}")
    return {"models": rows, "settings": settings}


def make_parser() -> ScriptParser:
    return ScriptParser((AuditScriptArguments, AuditConfig))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
