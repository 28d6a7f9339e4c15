"""Turn an emotional speech corpus into a speech-token dataset for reward-model training.

    python examples/prepare_data.py --source /data/ESD --layout esd \
        --tokenizer_model /models/CosyVoice2-0.5B/speech_tokenizer_v2.onnx --output_dir data/esd_tokens
    python examples/prepare_data.py --source /data/IEMOCAP_full_release --layout iemocap --label_set 4class \
        --test_fold 5 --tokenizer_model /models/CosyVoice2-0.5B/speech_tokenizer_v2.onnx --output_dir data/iemocap
    python examples/prepare_data.py --source manifest.csv --output_dir data/inhouse_tokens --num_proc 4
    python examples/prepare_data.py --hub_dataset org/emotional-speech --hub_split train --output_dir data/hub

A `.onnx` tokenizer (CosyVoice2's `speech_tokenizer_v2.onnx`) runs on onnxruntime, on CPU or GPU, without torchaudio;
a model name runs on the `s3tokenizer` package (GPU machines). Layouts: emotion folders, a manifest, ESD, IEMOCAP,
MER2023, CREMA-D, RAVDESS (docs/audio.md). `--config recipe.yaml` reads the arguments from a YAML file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rrpo_hf.data.audio import (
    AudioValidationConfig,
    check_dataset_output_dir,
    prepare_speech_token_dataset,
    records_from_dataset,
    save_dataset_atomically,
)
from rrpo_hf.data.corpora import LAYOUTS, CorpusScan, load_corpus
from rrpo_hf.data.labels import CORPUS_LABEL_SETS, UnknownEmotionError
from rrpo_hf.data.speech_tokenizer import TOKENIZER_BACKENDS, S3TokenizerUnavailableError, load_speech_tokenizer
from rrpo_hf.script_utils import ScriptParser, resolve_path, run_script


@dataclass
class PrepareDataArguments:
    output_dir: str = field(metadata={"help": "Where the token dataset is saved (`datasets.save_to_disk`)."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Save into a non-empty --output_dir that holds no dataset of this script. Only the dataset's "
            "files are replaced; other files there are kept."
        },
    )
    source: str | None = field(
        default=None,
        metadata={"help": "Corpus folder (any --layout) or a CSV/JSONL manifest. Default: none (use --hub_dataset)."},
    )
    layout: str = field(
        default="auto",
        metadata={
            "help": f"One of {list(LAYOUTS)}. `auto` (default) detects it: a file is a manifest; a folder is IEMOCAP "
            "(Session<N>/dialog/EmoEvaluation), RAVDESS (Actor_<NN>/), CREMA-D (AudioWAV/), MER2023 "
            "(train-label.csv, test<N>-label.csv), ESD (<speaker>/<speaker>.txt), else root/<emotion>/*.wav."
        },
    )
    label_set: str | None = field(
        default=None,
        metadata={
            "help": f"Emotions kept from a corpus layout: one of {sorted(CORPUS_LABEL_SETS)} (`full`: every emotion "
            "of rrpo_hf.data.labels.CORPUS_EMOTION_LABELS, `canonical`: the six canonical ones, `4class`: neutral, "
            "happy, angry, sad). Default (None): `4class` for IEMOCAP (excited merged into happy), `full` for every "
            "other layout (rrpo_hf.data.labels.DEFAULT_CORPUS_LABEL_SET). Dropped clips are counted as "
            "`excluded_label` and listed in the skipped list."
        },
    )
    num_folds: int = field(
        default=5,
        metadata={
            "help": "Speaker-independent folds of CREMA-D and RAVDESS (speakers sorted by id, speaker i in fold "
            "(i mod num_folds) + 1). IEMOCAP's folds are its 5 sessions."
        },
    )
    test_fold: int = field(
        default=5,
        metadata={
            "help": "Fold (1-based) whose speakers form the `test` split; for IEMOCAP the session left out. ESD and "
            "MER2023 keep the splits of their release."
        },
    )
    validation_fold: int | None = field(
        default=None,
        metadata={"help": "Fold whose speakers form a `validation` split. Default: none (train and test only)."},
    )
    hub_dataset: str | None = field(
        default=None,
        metadata={
            "help": "A Hub or local `datasets` dataset with an audio column, instead of --source. Default: none."
        },
    )
    hub_split: str = field(default="train", metadata={"help": "Split of --hub_dataset."})
    audio_column: str = field(default="audio", metadata={"help": "Audio column of --hub_dataset."})
    emotion_column: str = field(default="emotion", metadata={"help": "Emotion column of --hub_dataset."})
    text_column: str = field(default="text", metadata={"help": "Transcript column of --hub_dataset."})
    corpus: str = field(
        default="",
        metadata={"help": "Value of the `corpus` column. Default: the corpus layout's name, or the source name."},
    )
    emotion_aliases: str | None = field(
        default=None,
        metadata={
            "help": 'JSON object mapping extra corpus labels to canonical names, e.g. \'{"bored": "neutral"}\'. '
            "Default: none."
        },
    )
    tokenizer_model: str = field(
        default="speech_tokenizer_v2_25hz",
        metadata={
            "help": "S3 tokenizer: a local `speech_tokenizer_v2.onnx` (CosyVoice2-0.5B; onnxruntime, CPU or GPU) or "
            "an s3tokenizer model name (downloaded by s3tokenizer)."
        },
    )
    tokenizer_backend: str = field(
        default="auto",
        metadata={
            "help": f"One of {list(TOKENIZER_BACKENDS)}. `auto` (default): onnxruntime for a `.onnx` file, "
            "s3tokenizer for a model name. `s3tokenizer` runs a `.onnx` file through the s3tokenizer package "
            "(needs torchaudio)."
        },
    )
    tokenizer_num_threads: int = field(
        default=0,
        metadata={
            "help": "onnxruntime intra-op threads per tokenizer (per --num_proc worker); 0 (default) keeps "
            "onnxruntime's default, all cores. With --num_proc N use about cores / N."
        },
    )
    device: str | None = field(
        default=None,
        metadata={"help": "Tokenizer device, `cpu` or `cuda[:N]`. Default: CUDA when available, else CPU."},
    )
    batch_size: int = field(default=16, metadata={"help": "Clips per tokenizer call."})
    num_proc: int = field(default=1, metadata={"help": "`datasets.map` processes (use 1 with a GPU tokenizer)."})
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Cache of tokenized shards; re-running resumes from it. Default: <output_dir>.cache"},
    )
    min_duration_s: float = field(default=0.5, metadata={"help": "Shorter clips are skipped."})
    max_duration_s: float = field(
        default=30.0,
        metadata={
            "help": "Longer clips are skipped (`too_long`), as CosyVoice's tools do. Default: 30, one S3 tokenizer "
            "window; above it both backends tokenize 30 s windows overlapping by 4 s (s3tokenizer's rule)."
        },
    )
    min_sampling_rate: int = field(default=16_000, metadata={"help": "Clips recorded below this rate are skipped."})
    silence_threshold_db: float = field(default=-50.0, metadata={"help": "Quieter clips (RMS dBFS) are skipped."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Also push the token dataset to this Hub repo id. Default: none."}
    )


def main(args: PrepareDataArguments) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if (args.source is None) == (args.hub_dataset is None):
        raise ValueError("Pass exactly one of --source (folder or manifest) and --hub_dataset.")
    try:  # before hours of tokenization, not after
        check_dataset_output_dir(args.output_dir, overwrite=args.overwrite_output_dir)
    except FileExistsError as error:
        raise SystemExit(f"error: {error}") from None
    # Every path before any work or Hub call: a mistyped one fails now, naming it.
    if args.source is not None:
        resolve_path(args.source, "audio corpus")
    resolve_path(args.tokenizer_model, "speech tokenizer", bare_names_are_hub_ids=True)
    aliases = json.loads(args.emotion_aliases) if args.emotion_aliases else None
    if args.source is not None:
        try:
            scan = load_corpus(
                args.source,
                layout=args.layout,
                corpus=args.corpus,
                label_set=args.label_set,
                num_folds=args.num_folds,
                test_fold=args.test_fold,
                validation_fold=args.validation_fold,
                extra_aliases=aliases,
            )
        except (FileNotFoundError, UnknownEmotionError) as error:
            raise SystemExit(f"error: {error}") from None
        print(scan.summary())
        if not scan.records:
            raise SystemExit(
                f"error: no clip of {args.source} is left to prepare ({scan.summary()}); pick another --label_set."
            )
    else:
        from datasets import load_dataset

        dataset = load_dataset(args.hub_dataset, split=args.hub_split)
        records = records_from_dataset(
            dataset,
            audio_column=args.audio_column,
            emotion_column=args.emotion_column,
            text_column=args.text_column if args.text_column in dataset.column_names else None,
            corpus=args.corpus or args.hub_dataset,
        )
        scan = CorpusScan(records, corpus=args.corpus or args.hub_dataset, layout="dataset")
    try:
        tokenizer = load_speech_tokenizer(
            args.tokenizer_model,
            backend=args.tokenizer_backend,
            device=args.device,
            batch_size=args.batch_size,
            num_threads=args.tokenizer_num_threads,
        )
    except (S3TokenizerUnavailableError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    validation = AudioValidationConfig(
        min_duration_s=args.min_duration_s,
        max_duration_s=args.max_duration_s,
        min_sampling_rate=args.min_sampling_rate,
        silence_threshold_db=args.silence_threshold_db,
    )
    output_dir = Path(args.output_dir)
    result = prepare_speech_token_dataset(
        scan.records,
        tokenizer,
        validation=validation,
        extra_aliases=aliases,
        excluded=scan.excluded,
        batch_size=args.batch_size,
        num_proc=args.num_proc,
        cache_dir=args.cache_dir or f"{output_dir}.cache",
        skipped_list_path=output_dir.with_name(f"{output_dir.name}.skipped.tsv"),
    )
    save_dataset_atomically(result.dataset, output_dir, overwrite=args.overwrite_output_dir)
    settings = {
        "layout": scan.layout,
        "label_set": scan.label_set,
        "tokenizer_model": args.tokenizer_model,
        "tokenizer": getattr(tokenizer, "fingerprint", type(tokenizer).__name__),
        # train_rm.py --speech_tokenizer_version must repeat it: a reward model only fits policies of its tokenizer.
        "speech_tokenizer_version": getattr(tokenizer, "speech_tokenizer_version", "v2"),
    }
    (output_dir / "preparation_report.json").write_text(
        json.dumps({**result.report.to_dict(), "validation": asdict(validation), **settings}, indent=2) + "\n"
    )
    print(result.report.summary())
    print(f"Saved {len(result.dataset)} rows to {output_dir}; skipped list: {output_dir.name}.skipped.tsv")
    if args.push_to_hub:
        result.dataset.push_to_hub(args.push_to_hub)


def make_parser() -> ScriptParser:
    return ScriptParser((PrepareDataArguments,))


if __name__ == "__main__":
    run_script(make_parser().parse_args_and_config, main)
