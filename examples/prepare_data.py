"""Turn an emotional speech corpus into a speech-token dataset for reward-model training.

    python examples/prepare_data.py --source /data/ESD --layout esd \
        --tokenizer_model /models/CosyVoice2-0.5B/speech_tokenizer_v2.onnx --output_dir data/esd_tokens
    python examples/prepare_data.py --source manifest.csv --output_dir data/inhouse_tokens --num_proc 4
    python examples/prepare_data.py --hub_dataset org/emotional-speech --hub_split train --output_dir data/hub

The S3 tokenizer needs `s3tokenizer` + a working torchaudio (GPU machines); see docs/audio.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from rrpo_hf.data.audio import (
    AudioValidationConfig,
    check_dataset_output_dir,
    load_audio_records,
    prepare_speech_token_dataset,
    records_from_dataset,
    save_dataset_atomically,
)
from rrpo_hf.data.speech_tokenizer import S3SpeechTokenizer, S3TokenizerUnavailableError


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
        default=None, metadata={"help": "Corpus folder (emotion folders or ESD layout) or a CSV/JSONL manifest."}
    )
    layout: str = field(
        default="auto", metadata={"help": "`auto`, `emotion_folders` (root/<emotion>/*.wav), `esd` or `manifest`."}
    )
    hub_dataset: str | None = field(
        default=None, metadata={"help": "A Hub or local `datasets` dataset with an audio column, instead of --source."}
    )
    hub_split: str = field(default="train", metadata={"help": "Split of --hub_dataset."})
    audio_column: str = field(default="audio", metadata={"help": "Audio column of --hub_dataset."})
    emotion_column: str = field(default="emotion", metadata={"help": "Emotion column of --hub_dataset."})
    text_column: str = field(default="text", metadata={"help": "Transcript column of --hub_dataset."})
    corpus: str = field(default="", metadata={"help": "Value of the `corpus` column (defaults to the source name)."})
    emotion_aliases: str | None = field(
        default=None,
        metadata={
            "help": 'JSON object mapping extra corpus labels to canonical names, e.g. \'{"bored": "neutral"}\'.'
        },
    )
    tokenizer_model: str = field(
        default="speech_tokenizer_v2_25hz",
        metadata={"help": "S3 tokenizer: s3tokenizer model name or a local `speech_tokenizer_v2.onnx`."},
    )
    device: str | None = field(default=None, metadata={"help": "Tokenizer device (default: CUDA when available)."})
    batch_size: int = field(default=16, metadata={"help": "Clips per tokenizer call."})
    num_proc: int = field(default=1, metadata={"help": "`datasets.map` processes (use 1 with a GPU tokenizer)."})
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Cache of tokenized shards; re-running resumes from it. Default: <output_dir>.cache"},
    )
    min_duration_s: float = field(default=0.5, metadata={"help": "Shorter clips are skipped."})
    max_duration_s: float = field(default=30.0, metadata={"help": "Longer clips are skipped."})
    min_sampling_rate: int = field(default=16_000, metadata={"help": "Clips recorded below this rate are skipped."})
    silence_threshold_db: float = field(default=-50.0, metadata={"help": "Quieter clips (RMS dBFS) are skipped."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Also push the token dataset to this Hub repo id."}
    )


def main(args: PrepareDataArguments) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if (args.source is None) == (args.hub_dataset is None):
        raise ValueError("Pass exactly one of --source (folder or manifest) and --hub_dataset.")
    try:  # before hours of tokenization, not after
        check_dataset_output_dir(args.output_dir, overwrite=args.overwrite_output_dir)
    except FileExistsError as error:
        raise SystemExit(f"error: {error}") from None
    if args.source is not None:
        records = load_audio_records(args.source, layout=args.layout, corpus=args.corpus)
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
    try:
        tokenizer = S3SpeechTokenizer(args.tokenizer_model, device=args.device, batch_size=args.batch_size)
    except S3TokenizerUnavailableError as error:
        raise SystemExit(f"error: {error}") from None
    validation = AudioValidationConfig(
        min_duration_s=args.min_duration_s,
        max_duration_s=args.max_duration_s,
        min_sampling_rate=args.min_sampling_rate,
        silence_threshold_db=args.silence_threshold_db,
    )
    output_dir = Path(args.output_dir)
    result = prepare_speech_token_dataset(
        records,
        tokenizer,
        validation=validation,
        extra_aliases=json.loads(args.emotion_aliases) if args.emotion_aliases else None,
        batch_size=args.batch_size,
        num_proc=args.num_proc,
        cache_dir=args.cache_dir or f"{output_dir}.cache",
        skipped_list_path=output_dir.with_name(f"{output_dir.name}.skipped.tsv"),
    )
    save_dataset_atomically(result.dataset, output_dir, overwrite=args.overwrite_output_dir)
    (output_dir / "preparation_report.json").write_text(
        json.dumps({**result.report.to_dict(), "validation": asdict(validation)}, indent=2) + "\n"
    )
    print(result.report.summary())
    print(f"Saved {len(result.dataset)} rows to {output_dir}; skipped list: {output_dir.name}.skipped.tsv")
    if args.push_to_hub:
        result.dataset.push_to_hub(args.push_to_hub)


if __name__ == "__main__":
    (parsed,) = HfArgumentParser(PrepareDataArguments).parse_args_into_dataclasses()
    main(parsed)
