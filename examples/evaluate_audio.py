"""Objective evaluation of synthesized emotional speech: DNSMOS, RM emotion accuracy and reward.

    python examples/evaluate_audio.py --source synth/ --output_dir outputs/audio_eval            # DNSMOS only
    python examples/evaluate_audio.py --source synth/manifest.csv --reward_model outputs/reward_model \
        --tokenizer_model /models/CosyVoice2-0.5B/speech_tokenizer_v2.onnx --output_dir outputs/audio_eval

`--source` is a folder `<emotion>/*.wav` (folder name = target emotion) or a CSV/JSONL manifest with
`path, emotion[, text]`. Writes per_clip.csv, per_emotion.csv, summary.json, skipped.tsv, histograms.png.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rrpo_hf.data.audio import AudioValidationConfig, load_audio_records
from rrpo_hf.data.speech_tokenizer import TOKENIZER_BACKENDS, load_speech_tokenizer
from rrpo_hf.evaluation.audio import DNSMOSScorer, RewardModelScorer, evaluate_audio
from rrpo_hf.script_utils import ScriptParser, require_saved_model, resolve_path, run_script


@dataclass
class EvaluateAudioArguments:
    source: str = field(metadata={"help": "Folder of synthesized clips (<emotion>/*.wav) or a CSV/JSONL manifest."})
    output_dir: str = field(default="outputs/audio_eval", metadata={"help": "Where tables, summary and plot go."})
    layout: str = field(default="auto", metadata={"help": "`auto`, `emotion_folders`, `esd` or `manifest`."})
    dnsmos: bool = field(default=True, metadata={"help": "Compute DNSMOS (speechmos, CPU)."})
    personalized_dnsmos: bool = field(default=False, metadata={"help": "Use the personalized DNSMOS model."})
    reward_model: str | None = field(
        default=None, metadata={"help": "RobustSER reward model dir; enables emotion accuracy and mean reward."}
    )
    tokenizer_model: str = field(
        default="speech_tokenizer_v2_25hz",
        metadata={
            "help": "S3 tokenizer that produced the RM's training tokens: `speech_tokenizer_v2.onnx` (runs on "
            "onnxruntime, CPU included) or an s3tokenizer model name. Default: speech_tokenizer_v2_25hz."
        },
    )
    tokenizer_backend: str = field(
        default="auto",
        metadata={
            "help": f"One of {list(TOKENIZER_BACKENDS)}. `auto` (default): onnxruntime for a `.onnx` file, "
            "s3tokenizer for a model name (as examples/prepare_data.py)."
        },
    )
    device: str | None = field(
        default=None, metadata={"help": "Device of the tokenizer and RM (default: CUDA if any)."}
    )
    batch_size: int = field(default=16, metadata={"help": "Clips per scoring batch."})
    max_duration_s: float = field(default=120.0, metadata={"help": "Longer clips are skipped and listed."})


def main(args: EvaluateAudioArguments) -> None:
    # Every path before any work or Hub call: a mistyped one fails now, naming it.
    resolve_path(args.source, "folder or manifest of synthesized clips")
    if args.reward_model:
        args.reward_model = require_saved_model(
            args.reward_model, "reward model", "accelerate launch examples/train_rm.py"
        )
        resolve_path(args.tokenizer_model, "speech tokenizer", bare_names_are_hub_ids=True)
    records = load_audio_records(args.source, layout=args.layout)
    reward_scorer = None
    if args.reward_model:
        tokenizer = load_speech_tokenizer(
            args.tokenizer_model, backend=args.tokenizer_backend, device=args.device, batch_size=args.batch_size
        )
        reward_scorer = RewardModelScorer(args.reward_model, tokenizer, batch_size=args.batch_size, device=args.device)
    result = evaluate_audio(
        records,
        dnsmos=DNSMOSScorer(personalized=args.personalized_dnsmos) if args.dnsmos else None,
        reward_scorer=reward_scorer,
        validation=AudioValidationConfig(max_duration_s=args.max_duration_s),
        batch_size=args.batch_size,
    )
    paths = result.save(args.output_dir)
    for emotion, values in result.per_emotion.items():
        print(emotion, {k: round(v, 4) for k, v in values.items()})
    print(result.report.summary())
    print("Wrote", ", ".join(str(p) for p in paths.values()))


def make_parser() -> ScriptParser:
    return ScriptParser((EvaluateAudioArguments,))


if __name__ == "__main__":
    run_script(make_parser().parse_args_and_config, main)
