"""The RRPO paper's Table 2 for any reward model on any speech-token datasets: WA, UA and macro-F1 per corpus.

    python examples/evaluate_rm.py --reward_model outputs/reward_model \
        --datasets data/esd_tokens data/iemocap_tokens data/mer2023_tokens --output_dir outputs/table2
    python examples/evaluate_rm.py --reward_model outputs/rm_base outputs/rm_rrpo --model_names base rrpo \
        --datasets data/esd_tokens data/cremad_tokens --dataset_split test --output_dir outputs/table2_ablation
    python examples/evaluate_rm.py --config recipe.yaml        # the same arguments from a YAML file

A reward model is a folder saved by `examples/train_rm.py` (or a Hub id): `AutoModelForAudioClassification` with
rrpo_hf's models registered, or with `--trust_remote_code true` for a folder that ships its code. A dataset is a
`save_to_disk` folder (`examples/prepare_data.py` writes them) or a Hub id with `speech_tokens` and an `emotion`
column (ClassLabel ids or names). Rows are grouped by their `corpus` column (else the dataset's name), and within a
corpus by `language` when it has several (ESD's zh and en halves). `--dataset_split` picks a split: of a
DatasetDict, or the rows whose `split` column holds it (prepare_data's datasets), else every row.

Writes to --output_dir: `results.json` (every figure: WA, UA, macro-F1, per-class recall, confusion matrix, counts),
`table.md` (one row per model, WA/UA/F1 per corpus, in percent, and ε_adv / ‖h'‖: the model's saved FGM radius
over the norm of its h' per utterance, averaged over every row) and `confusion/<model>__<group>.png`. Existing files
of these names are only replaced with --overwrite_output_dir.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rrpo_hf.audit import hidden_state_norms
from rrpo_hf.data.labels import emotion_key, emotion_label_ids
from rrpo_hf.evaluation.metrics import confusion_matrix, emotion_recognition_scores
from rrpo_hf.script_utils import ScriptParser, load_dataset_source, require_saved_model, resolve_path, run_script
from rrpo_hf.utils.saving import atomic_write, atomic_write_text


logger = logging.getLogger(__name__)

UNKNOWN_EMOTION_POLICIES = ("error", "drop")


@dataclass
class EvaluateRMArguments:
    reward_model: list[str] = field(
        metadata={"help": "Reward-model folders (train_rm.py output) or Hub ids; one table row each. Required."}
    )
    datasets: list[str] = field(
        metadata={"help": "Speech-token datasets: `save_to_disk` folders or Hub ids. Required."}
    )
    output_dir: str = field(default="outputs/rm_eval", metadata={"help": "Where results, table and plots go."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace results.json, table.md and confusion PNGs of an earlier run in --output_dir. Other "
            "files there are never touched."
        },
    )
    model_names: list[str] = field(
        default_factory=list,
        metadata={"help": "Row names of the models, one per --reward_model. Default (empty): each folder's name."},
    )
    dataset_names: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Names of the datasets, one per --datasets, used as the group of rows without a `corpus` "
            "column. Default (empty): each folder's name or Hub id."
        },
    )
    dataset_split: list[str] = field(
        default_factory=lambda: ["test"],
        metadata={
            "help": "Split to evaluate: one for all datasets, or one per --datasets. A DatasetDict's split, else the "
            "rows whose `split` column holds it, else (no such column) every row. `all`: every row."
        },
    )
    emotion_column: str = field(default="emotion", metadata={"help": "Emotion column (ClassLabel or names)."})
    tokens_column: str = field(default="speech_tokens", metadata={"help": "Speech-token column."})
    corpus_column: str = field(default="corpus", metadata={"help": "Column grouping rows into corpora."})
    language_column: str = field(
        default="language", metadata={"help": "Column splitting a corpus by language when it has several."}
    )
    unknown_emotions: str = field(
        default="error",
        metadata={
            "help": "Rows whose emotion is not a label of a model: `error` (stop, naming the rows) or `drop` (leave "
            "them out of that model's figures and count them in results.json)."
        },
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Truncate token sequences to this length. Default (None): no truncation; sequences longer "
            "than a model's max_position_embeddings are an error."
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Rows per forward pass."})
    device: str | None = field(default=None, metadata={"help": "Device of the models. Default (None): CUDA if any."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Load reward models that ship their modeling code (remote code)."}
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bars."})


# -------------------------------------------------------------------------------------------------- loading
def _names(given: list[str], sources: list[str], what: str) -> list[str]:
    if given and len(given) != len(sources):
        raise SystemExit(f"error: {len(given)} --{what}_names for {len(sources)} sources; give one per source.")
    names = list(given) or [Path(source.rstrip("/")).name or source for source in sources]
    seen: dict[str, int] = {}
    unique = []
    for name in names:  # two folders called `reward_model` become reward_model and reward_model-2
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique


def load_split(source: str, split: str):
    """The rows of ``source`` (a `save_to_disk` folder, a folder of data files, a data file or a Hub id) to evaluate,
    as one `datasets.Dataset`."""
    from datasets import DatasetDict

    dataset = load_dataset_source(source)
    if isinstance(dataset, DatasetDict):
        if split in dataset:
            return dataset[split]
        if split == "all":
            from datasets import concatenate_datasets

            return concatenate_datasets(list(dataset.values()))
        raise SystemExit(
            f"error: dataset {source} has no split {split!r} (its splits: {sorted(dataset)}). Pass --dataset_split "
            "with one of them (one value per dataset when they differ)."
        )
    if split != "all" and "split" in dataset.column_names:
        values = sorted(set(dataset["split"]))
        if split not in values:
            raise SystemExit(
                f"error: no row of dataset {source} has split {split!r} (its `split` column holds {values}). Pass "
                "--dataset_split with one of them, or `all` for every row."
            )
        return dataset.filter(lambda value: value == split, input_columns="split")
    return dataset


def emotion_names(dataset, column: str, source: str) -> list[str]:
    from datasets import ClassLabel

    if column not in dataset.column_names:
        raise SystemExit(
            f"error: dataset {source} has no `{column}` column (columns: {dataset.column_names}). Pass "
            "--emotion_column."
        )
    feature, values = dataset.features[column], dataset[column]
    if isinstance(feature, ClassLabel):
        return feature.int2str(values)
    if values and not isinstance(values[0], str):
        raise SystemExit(
            f"error: the `{column}` column of dataset {source} holds {type(values[0]).__name__} values without "
            "label names. Cast it with `dataset.cast_column(column, ClassLabel(names=[...]))` or store the names."
        )
    return [str(value) for value in values]


def load_reward_model(path: str, trust_remote_code: bool, device: str):
    from transformers import AutoModelForAudioClassification

    import rrpo_hf.models.robust_ser  # noqa: F401  (registers RobustSER with the Auto classes)

    kwargs = {"trust_remote_code": True} if trust_remote_code else {}
    try:
        model = AutoModelForAudioClassification.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        raise SystemExit(
            f"error: reward model {path} does not load with AutoModelForAudioClassification: {error}. Pass an emotion "
            "classifier saved by examples/train_rm.py (a folder or Hub id), with --trust_remote_code true if it "
            "ships its modeling code."
        ) from None
    if not getattr(model.config, "id2label", None):
        raise SystemExit(f"error: {path} has no `id2label` in its config; it is not an emotion classifier.")
    return model.to(device).eval()


# -------------------------------------------------------------------------------------------------- scoring
def predict(model, token_lists, args, source: str, progress) -> np.ndarray:
    """Argmax class ids of ``model`` for every row, through the package's one batched classifier call."""
    from rrpo_hf.evaluation.scorers import classifier_logits

    try:
        logits = classifier_logits(model, token_lists, args.batch_size, args.max_length, on_batch=progress.update)
    except ValueError as error:
        raise SystemExit(f"error: dataset {source}: {error} (evaluate_rm.py: --max_length N truncates)") from None
    return logits.argmax(-1).numpy()


def plot_confusion(matrix: np.ndarray, labels: list[str], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    support = matrix.sum(axis=1, keepdims=True)
    recall = np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)
    size = 1.6 + 0.55 * len(labels)
    figure, axes = plt.subplots(figsize=(size + 1.2, size))
    image = axes.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0)
    for row in range(len(labels)):
        for column in range(len(labels)):
            color = "white" if recall[row, column] > 0.6 else "black"
            axes.text(column, row, str(int(matrix[row, column])), ha="center", va="center", fontsize=8, color=color)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046, label="row share (recall)")
    figure.tight_layout()
    try:
        atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=100, format="png"))
    finally:
        plt.close(figure)
    return path


def markdown_table(results: dict, groups: list[str]) -> str:
    header = "| model | " + " | ".join(f"{group} WA | {group} UA | {group} F1" for group in groups) + " | ε_adv/‖h'‖ |"
    lines = [header, "|---|" + "---:|" * (3 * len(groups) + 1)]
    for model, figures in results.items():
        cells = []
        for group in groups:
            scores = figures["groups"].get(group)
            metrics = ("wa", "ua", "macro_f1")
            cells += [f"{100 * scores[key]:.1f}" for key in metrics] if scores else ["-"] * 3
        ratio = figures.get("hidden_scale", {}).get("adv_epsilon_over_hidden_norm")
        cells.append("-" if ratio is None else f"{ratio:.4f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "group"


# -------------------------------------------------------------------------------------------------- main
def main(args: EvaluateRMArguments) -> dict:
    import torch
    from tqdm.auto import tqdm

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.unknown_emotions not in UNKNOWN_EMOTION_POLICIES:
        raise SystemExit(f"error: --unknown_emotions must be one of {UNKNOWN_EMOTION_POLICIES}.")
    if len(args.dataset_split) not in (1, len(args.datasets)):
        raise SystemExit(
            f"error: {len(args.dataset_split)} --dataset_split values for {len(args.datasets)} datasets; give one "
            "for all or one per dataset."
        )
    # Every path first: a mistyped folder fails now, naming it, not after the models loaded or a Hub call.
    args.reward_model = [
        require_saved_model(path, "reward model", "accelerate launch examples/train_rm.py")
        for path in args.reward_model
    ]
    args.datasets = [resolve_path(source, "dataset", bare_names_are_hub_ids=True) for source in args.datasets]
    model_names = _names(args.model_names, args.reward_model, "model")
    dataset_names = _names(args.dataset_names, args.datasets, "dataset")
    splits = args.dataset_split * len(args.datasets) if len(args.dataset_split) == 1 else args.dataset_split
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    # Rows of every dataset, with their group(s): the corpus, and corpus/language when a corpus has several languages.
    datasets = []
    for source, name, split in zip(args.datasets, dataset_names, splits):
        dataset = load_split(source, split)
        if len(dataset) == 0:
            raise SystemExit(f"error: dataset {source} has no rows in split {split!r}.")
        if args.tokens_column not in dataset.column_names:
            raise SystemExit(
                f"error: dataset {source} has no `{args.tokens_column}` column (columns: {dataset.column_names}). "
                "Pass --tokens_column, or prepare the audio with examples/prepare_data.py."
            )
        corpora = dataset[args.corpus_column] if args.corpus_column in dataset.column_names else [""] * len(dataset)
        languages = (
            dataset[args.language_column] if args.language_column in dataset.column_names else [""] * len(dataset)
        )
        datasets.append(
            {
                "source": source,
                "name": name,
                "split": split,
                "tokens": dataset[args.tokens_column],
                "emotions": emotion_names(dataset, args.emotion_column, source),
                "corpora": [corpus or name for corpus in corpora],
                "languages": [language or "" for language in languages],
            }
        )
    by_corpus: dict[str, list[tuple[int, int]]] = {}  # corpus -> (dataset index, row)
    for index, data in enumerate(datasets):
        for row, corpus in enumerate(data["corpora"]):
            by_corpus.setdefault(corpus, []).append((index, row))
    group_rows: dict[str, list[tuple[int, int]]] = {}  # each corpus, then its languages when it has several
    for corpus, members in by_corpus.items():
        group_rows[corpus] = members
        languages = sorted({datasets[d]["languages"][r] for d, r in members} - {""})
        if len(languages) > 1:
            for language in languages:
                group_rows[f"{corpus}/{language}"] = [
                    (d, r) for d, r in members if datasets[d]["languages"][r] == language
                ]
    groups = list(group_rows)

    output_dir = Path(args.output_dir)
    planned = [output_dir / "results.json", output_dir / "table.md"]
    planned += [
        output_dir / "confusion" / f"{_file_name(model)}__{_file_name(group)}.png"
        for model in model_names
        for group in groups
    ]
    existing = [str(path) for path in planned if path.exists()]
    if existing and not args.overwrite_output_dir:
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise SystemExit(
            f"error: --output_dir {output_dir} already holds {shown}. Pass --overwrite_output_dir to replace them "
            "(other files there are kept), or pick another --output_dir."
        )

    results: dict[str, dict] = {}
    for model_path, model_name in zip(args.reward_model, model_names):
        model = load_reward_model(model_path, args.trust_remote_code, device)
        id2label = {int(i): str(label) for i, label in model.config.id2label.items()}
        labels = [id2label[i] for i in range(len(id2label))]
        lookup = emotion_label_ids(id2label)
        references, unknown = [], []
        for data in datasets:
            ids = [lookup.get(emotion_key(emotion), -1) for emotion in data["emotions"]]
            unknown += [(data["source"], row, data["emotions"][row]) for row, i in enumerate(ids) if i < 0]
            references.append(np.array(ids, dtype=np.int64))
        if unknown and args.unknown_emotions == "error":
            source, row, emotion = unknown[0]
            emotions = sorted({emotion for _, _, emotion in unknown})
            raise SystemExit(
                f"error: dataset {source} row {row} has emotion {emotion!r}, which is not a label of reward model "
                f"{model_path} (its labels: {labels}); {len(unknown)} rows have such emotions ({emotions}). Pass "
                "--unknown_emotions drop to leave them out (they are counted in results.json), or prepare the "
                "dataset with a label set the model knows (prepare_data.py --label_set 4class or canonical)."
            )
        total = sum(len(data["tokens"]) for data in datasets)
        with tqdm(total=total, desc=f"Scoring {model_name}", unit="row", disable=args.disable_tqdm) as progress:
            predictions = [predict(model, data["tokens"], args, data["source"], progress) for data in datasets]
        figures: dict[str, dict] = {}
        for group, members in group_rows.items():
            refs = np.array([references[d][r] for d, r in members], dtype=np.int64)
            preds = np.array([predictions[d][r] for d, r in members], dtype=np.int64)
            known = refs >= 0
            dropped = int((~known).sum())
            if not known.any():
                figures[group] = {"num_samples": 0, "dropped_unknown_emotion": dropped}
                logger.warning(
                    "%s: no row of %s has an emotion of the model; the group is left out.", model_name, group
                )
                continue
            refs, preds = refs[known], preds[known]
            scores = emotion_recognition_scores(
                preds, refs, num_labels=len(labels), label_names=labels, return_per_class=True
            )
            matrix = confusion_matrix(refs, preds, len(labels))
            scores.update({"confusion_matrix": matrix.tolist(), "dropped_unknown_emotion": dropped})
            figures[group] = scores
            title = f"{model_name} on {group}: WA {100 * scores['wa']:.1f}  UA {100 * scores['ua']:.1f}  F1 " + (
                f"{100 * scores['macro_f1']:.1f}  (n={scores['num_samples']})"
            )
            plot_confusion(
                matrix, labels, title, output_dir / "confusion" / f"{_file_name(model_name)}__{_file_name(group)}.png"
            )
        # The FGM radius ε_adv the RM was trained with, against the norm of its h' per utterance (docs/audit.md).
        token_lists = [
            tokens[: args.max_length] if args.max_length else tokens for d in datasets for tokens in d["tokens"]
        ]
        hidden_scale = hidden_state_norms(model, token_lists, args.batch_size) if hasattr(model, "classify") else {}
        results[model_name] = {"path": model_path, "labels": labels, "groups": figures, "hidden_scale": hidden_scale}
        del model

    table = markdown_table(results, groups)
    summary = {
        "models": results,
        "datasets": [
            {"source": data["source"], "name": data["name"], "split": data["split"], "rows": len(data["tokens"])}
            for data in datasets
        ],
        "groups": {group: len(rows) for group, rows in group_rows.items()},
        "settings": {key: value for key, value in asdict(args).items() if key not in ("reward_model", "datasets")},
    }
    atomic_write_text(output_dir / "results.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(output_dir / "table.md", table)
    print(table)
    print(f"Wrote {output_dir / 'results.json'}, {output_dir / 'table.md'} and {output_dir / 'confusion'}/*.png")
    return summary


def make_parser() -> ScriptParser:
    return ScriptParser((EvaluateRMArguments,))


if __name__ == "__main__":
    run_script(make_parser().parse_args_and_config, main)
