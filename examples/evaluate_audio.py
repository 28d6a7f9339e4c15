"""Objective evaluation of synthesized emotional speech: DNSMOS, the field's judges (CER / WER by an ASR model, speaker
similarity, an independent emotion classifier) and the training RM's emotion accuracy and reward.

    python examples/evaluate_audio.py --source synth/ --output_dir outputs/audio_eval            # DNSMOS only
    python examples/evaluate_audio.py --source synth/manifest.csv --asr_model openai/whisper-large-v3 \
        --asr_language english --speaker_model microsoft/wavlm-base-plus-sv \
        --emotion_judge_model <a transformers speech-emotion classifier> --output_dir outputs/audio_eval
    python examples/evaluate_audio.py --source synth/manifest.csv --reward_model outputs/reward_model \
        --tokenizer_model /models/CosyVoice2-0.5B/speech_tokenizer_v2.onnx --output_dir outputs/audio_eval

`--source` is a folder `<emotion>/*.wav` (folder name = target emotion) or a CSV/JSONL manifest with
`path, emotion[, text, prompt_audio]`. CER / WER need the `text` each clip should say; speaker similarity compares each
clip with its `prompt_audio` (the prompt speaker's clip), else with `--speaker_reference`. Each judge is optional and
named by a model path or Hub id. Writes per_clip.csv (with the ASR transcripts), per_emotion.csv, summary.json,
skipped.tsv, histograms.png.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rrpo_hf.data.audio import AudioValidationConfig, load_and_validate, load_audio_records
from rrpo_hf.data.speech_tokenizer import TOKENIZER_BACKENDS, load_speech_tokenizer
from rrpo_hf.evaluation.audio import DNSMOSScorer, RewardModelScorer, evaluate_audio
from rrpo_hf.evaluation.judges import ASRJudge, EmotionJudge, SpeakerSimilarityJudge
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
    asr_model: str | None = field(
        default=None,
        metadata={
            "help": "ASR model (path or Hub id) for CER / WER against each clip's `text`, through "
            "pipeline('automatic-speech-recognition'): e.g. openai/whisper-large-v3 (English), a Paraformer-style "
            "or wav2vec2 CTC model (Chinese). None: no CER / WER."
        },
    )
    asr_language: str | None = field(
        default=None,
        metadata={"help": "Language a Whisper-style ASR model transcribes (e.g. english). None: it detects it."},
    )
    speaker_model: str | None = field(
        default=None,
        metadata={
            "help": "x-vector model (path or Hub id, AutoModelForAudioXVector, e.g. microsoft/wavlm-base-plus-sv) for "
            "the speaker similarity to the prompt speaker. None: no speaker similarity."
        },
    )
    speaker_reference: str | None = field(
        default=None,
        metadata={
            "help": "The prompt speaker's clip, for clips without a manifest `prompt_audio` (needed with "
            "--speaker_model unless every clip has one)."
        },
    )
    emotion_judge_model: str | None = field(
        default=None,
        metadata={
            "help": "Independent speech-emotion classifier on audio (path or Hub id, AutoModelForAudioClassification; "
            "not the training RM): emotion_judge_accuracy and emotion_judge_target_prob. None: no judge."
        },
    )
    device: str | None = field(
        default=None, metadata={"help": "Device of the tokenizer, the RM and the judges (default: CUDA if any)."}
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
    for judge, what in [
        (args.asr_model, "ASR judge"),
        (args.speaker_model, "speaker model"),
        (args.emotion_judge_model, "emotion judge"),
    ]:
        if judge:
            resolve_path(judge, what, bare_names_are_hub_ids=True)
    records = load_audio_records(args.source, layout=args.layout)
    reward_scorer = None
    if args.reward_model:
        tokenizer = load_speech_tokenizer(
            args.tokenizer_model, backend=args.tokenizer_backend, device=args.device, batch_size=args.batch_size
        )
        reward_scorer = RewardModelScorer(args.reward_model, tokenizer, batch_size=args.batch_size, device=args.device)
    validation = AudioValidationConfig(max_duration_s=args.max_duration_s)
    audio_judges = []
    if args.asr_model:
        audio_judges.append(ASRJudge(args.asr_model, language=args.asr_language, device=args.device))
    if args.speaker_model:
        reference = None
        if args.speaker_reference:
            reference = (load_and_validate(args.speaker_reference, validation), validation.target_sampling_rate)
        elif not all(record.prompt_audio for record in records):
            raise ValueError(
                "--speaker_model compares each clip with the prompt speaker: give --speaker_reference <wav>, or a "
                "`prompt_audio` column for every clip of the manifest."
            )
        audio_judges.append(SpeakerSimilarityJudge(args.speaker_model, reference=reference, device=args.device))
    if args.emotion_judge_model:
        audio_judges.append(EmotionJudge(args.emotion_judge_model, device=args.device))
    result = evaluate_audio(
        records,
        dnsmos=DNSMOSScorer(personalized=args.personalized_dnsmos) if args.dnsmos else None,
        reward_scorer=reward_scorer,
        validation=validation,
        batch_size=args.batch_size,
        audio_judges=audio_judges,
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
