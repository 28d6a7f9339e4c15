"""Train (or robustly fine-tune) a speech-emotion reward model with RRPO's hybrid regularization.

With no arguments it trains a small reward model on the built-in testbed (language `alpha`), evaluates it on the
`alpha` and `beta` test splits (a cross-lingual table, like the paper's Table 2), and saves it to
`outputs/reward_model`; on 2 CPU cores this takes a few minutes:

    accelerate launch examples/train_rm.py

The paper's setting (continue from a pretrained RM at lr 1e-5, ε 0.1, ε_adv 0.5, α 0.5), on 8 GPUs:

    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml examples/train_rm.py \
        --config recipes/cosyvoice2-0.5b/rm_robust.yaml --model_name_or_path $PRETRAINED_RM_DIR \\
        --dataset_name $TOKEN_DATASET

Ablation rows (Table 2): `--label_smoothing 0 --use_eam false --adv_alpha 0` (base), `--use_eam false --adv_alpha 0`
(+LS), `--adv_alpha 0` (+EAM), defaults (+Adv = RRPO). `--config recipes/toy/rm_base.yaml` is the toy base row.

Without `--config` and `--dataset_name` the script runs the CPU toy, `recipes/toy/rm_robust.yaml` (small model,
lr 1e-3, a few epochs; flags override it), or with `--tasks` naming an ASR or quality head
`recipes/toy/rm_multitask.yaml`. With a recipe or a dataset, keys the recipe and flags do not set keep
`RobustRewardConfig`'s defaults. `--resume_from_checkpoint true` resumes from the latest checkpoint in `output_dir`.

Multi-task reward model (DiffRO: one token encoder with an emotion, an ASR and a quality head, docs/multitask_rm.md):

    accelerate launch examples/train_rm.py --tasks emotion,asr,quality   # toy recipe: recipes/toy/rm_multitask.yaml

trains `RobustSERForMultiTaskReward` with `MultiTaskRewardTrainer` on the testbed quality corpus (natural and
degraded speech, `make_quality_corpus`) or on `--dataset_name` (columns `speech_tokens`, `text`, `emotion`,
`quality`; the ASR symbols are read from the training texts). `--model_name_or_path` may be a multi-task checkpoint or
a RobustSER emotion model, whose encoder and emotion head then start the multi-task model. Without `--tasks` (or with
`--tasks emotion`) the script trains the emotion model exactly as above.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict
from transformers import set_seed
from trl import ScriptArguments

from rrpo_hf import (
    MultiTaskRewardConfig,
    MultiTaskRewardTrainer,
    RobustRewardConfig,
    RobustRewardTrainer,
    build_robust_ser_config,
)
from rrpo_hf.data.labels import CANONICAL_EMOTIONS, UnknownEmotionError, normalize_emotion
from rrpo_hf.script_utils import (
    ScriptParser,
    load_dataset_source,
    require_saved_model,
    resolve_resume_from_checkpoint,
    run_script,
)


# The argument-free run (no --config, no --dataset_name) is this recipe; every other run starts from the library's
# defaults (RobustRewardConfig: the paper's regularization).
TOY_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "rm_robust.yaml"
#: ... and with --tasks naming an ASR or quality head, this one.
MULTITASK_TOY_RECIPE = TOY_RECIPE.with_name("rm_multitask.yaml")


@dataclass
class RewardScriptArguments(ScriptArguments):
    """Data options. Without `dataset_name` the built-in testbed corpus is used."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Dataset with `speech_tokens` and the emotion column: a `save_to_disk` folder (Dataset or "
            "DatasetDict), a folder of data files (train.jsonl, test.jsonl, ...), one data file (.jsonl, .json, "
            ".csv, .parquet; the train split) or a Hub id (with --dataset_config). Empty: the built-in testbed corpus."
        },
    )
    extra_eval_datasets: list[str] = field(
        default_factory=list,
        metadata={
            "help": "More evaluation sets for the cross-corpus table: Hub names, `save_to_disk` folders, folders of "
            "data files or data files, each evaluated on its `dataset_test_split` (or as a whole if it is a single "
            "Dataset)."
        },
    )
    testbed_train_language: str = field(default="alpha", metadata={"help": "Testbed language of the training split."})
    testbed_eval_languages: list[str] = field(
        default_factory=lambda: ["alpha", "beta"],
        metadata={"help": "Testbed languages whose test splits are evaluated (cross-lingual table)."},
    )
    testbed_num_train: int = field(default=1200, metadata={"help": "Testbed training utterances."})
    testbed_num_test: int = field(default=300, metadata={"help": "Testbed test utterances per eval language."})
    testbed_codebook_size: int = field(default=512, metadata={"help": "Testbed speech codebook size."})
    testbed_spurious_artifact_rate: float = field(
        default=0.0,
        metadata={"help": "Probability that a training utterance of a spurious emotion carries artifact tokens."},
    )
    testbed_seed: int = field(default=0, metadata={"help": "Testbed corpus seed."})


@dataclass
class RewardModelArguments:
    """Model options: continue from a pretrained RM, or build a `RobustSERConfig` (toy size by default)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Pretrained reward model (path or Hub id) to fine-tune. Empty: train from a new config."},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow loading a Hub checkpoint that ships its modeling code."}
    )
    vocab_size: int | None = field(
        default=None,
        metadata={
            "help": "Speech codebook size. Default: the testbed codebook, or 6561 (CosyVoice2 S3) for datasets."
        },
    )
    hidden_size: int = field(default=64, metadata={"help": "Encoder width D."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Encoder layers."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads."})
    intermediate_size: int = field(default=128, metadata={"help": "Feed-forward width."})
    hidden_dropout_prob: float = field(default=0.1, metadata={"help": "Dropout on hidden states."})
    attention_dropout: float = field(default=0.1, metadata={"help": "Dropout on attention weights."})
    max_position_embeddings: int = field(default=512, metadata={"help": "Longest token sequence the model accepts."})
    pooling: str = field(default="attention", metadata={"help": "Pooling over frames: `attention` or `mean`."})
    speech_tokenizer_version: str = field(
        default="v2",
        metadata={
            "help": "S3 tokenizer of the dataset's tokens (its preparation_report.json says): `v2` (CosyVoice2) or "
            "`v3` (CosyVoice3). Saved in a new RM's config (a pretrained RM keeps its own, like the other sizes); "
            "DiffRO refuses a policy of the other version."
        },
    )


def _split_names(dataset) -> list[str]:
    return list(dataset.keys()) if isinstance(dataset, DatasetDict) else []


def _load(name_or_path: str, config_name: str | None = None):
    return load_dataset_source(name_or_path, config_name)


def _pick_split(dataset, split: str, source: str) -> Dataset:
    if isinstance(dataset, Dataset):
        return dataset
    if split not in dataset:
        raise ValueError(f"{source} has no split {split!r}; it has {_split_names(dataset)}.")
    return dataset[split]


def load_datasets(script_args: RewardScriptArguments) -> tuple[Dataset, dict[str, Dataset], int | None]:
    """(train set, {eval name: eval set}, codebook size if known)."""
    if script_args.dataset_name is None:
        from rrpo_hf.testbed import EmotionWorld, TestbedConfig, make_emotion_corpus

        world = EmotionWorld(TestbedConfig(codebook_size=script_args.testbed_codebook_size))
        corpus_kwargs = dict(world=world, seed=script_args.testbed_seed)
        train = make_emotion_corpus(
            script_args.testbed_train_language,
            num_train=script_args.testbed_num_train,
            num_test=0,
            spurious_artifact_rate=script_args.testbed_spurious_artifact_rate,
            **corpus_kwargs,
        )["train"]
        evals = {
            language: make_emotion_corpus(
                language, num_train=0, num_test=script_args.testbed_num_test, **corpus_kwargs
            )["test"]
            for language in script_args.testbed_eval_languages
        }
        return train, evals, world.config.codebook_size

    dataset = _load(script_args.dataset_name, script_args.dataset_config)
    train = _pick_split(dataset, script_args.dataset_train_split, script_args.dataset_name)
    evals = {}
    if isinstance(dataset, DatasetDict) and script_args.dataset_test_split in dataset:
        evals[script_args.dataset_name.rstrip("/").split("/")[-1]] = dataset[script_args.dataset_test_split]
    for name in script_args.extra_eval_datasets:
        evals[name.rstrip("/").split("/")[-1]] = _pick_split(_load(name), script_args.dataset_test_split, name)
    return train, evals, None


def label_names_of(dataset: Dataset, label_column: str) -> list[str]:
    """Canonical emotion names of a dataset's ClassLabel column (in its order), else the six canonical emotions."""
    feature = dataset.features.get(label_column)
    names = getattr(feature, "names", None)
    if not names:
        return list(CANONICAL_EMOTIONS)
    try:
        return list(dict.fromkeys(normalize_emotion(name) for name in names))
    except UnknownEmotionError:
        return list(names)


def is_multitask_run(training_args: RobustRewardConfig) -> bool:
    """`--tasks` names a head beyond the emotion one: train the multi-task reward model."""
    tasks = getattr(training_args, "tasks", None)
    return tasks is not None and list(tasks) != ["emotion"]


def load_quality_datasets(script_args: RewardScriptArguments) -> tuple[Dataset, dict[str, Dataset], int, list[str]]:
    """The testbed quality corpus: (train set, {language: test set}, codebook size, ASR symbols)."""
    from rrpo_hf.testbed import EmotionWorld, TestbedConfig, asr_vocabulary, make_quality_corpus

    if script_args.testbed_spurious_artifact_rate > 0:
        raise ValueError(
            "--testbed_spurious_artifact_rate is not supported with --tasks: the quality corpus already degrades "
            "speech with artifacts (labelled by the oracle). Drop the flag, or pass your own --dataset_name."
        )
    world = EmotionWorld(TestbedConfig(codebook_size=script_args.testbed_codebook_size))
    corpus_kwargs = dict(world=world, seed=script_args.testbed_seed)
    train = make_quality_corpus(
        script_args.testbed_train_language, num_train=script_args.testbed_num_train, num_test=0, **corpus_kwargs
    )["train"]
    evals = {
        language: make_quality_corpus(language, num_train=0, num_test=script_args.testbed_num_test, **corpus_kwargs)[
            "test"
        ]
        for language in script_args.testbed_eval_languages
    }
    return train, evals, world.config.codebook_size, asr_vocabulary(world)


def asr_symbols_of(dataset: Dataset, text_column: str) -> list[str]:
    """The ASR vocabulary of a dataset: every space-separated symbol of its transcripts, sorted."""
    if text_column not in dataset.column_names:
        raise ValueError(
            f"The training set has no `{text_column}` column for the ASR head (it has {dataset.column_names}); set "
            "--text_column or drop asr from --tasks."
        )
    return sorted({symbol for text in dataset[text_column] if isinstance(text, str) for symbol in text.split()})


def quality_labels_of(dataset: Dataset, quality_column: str) -> list[str] | None:
    """The quality classes of a dataset's ClassLabel column (in its order); None: the model's default (1..5)."""
    feature = dataset.features.get(quality_column)
    names = getattr(feature, "names", None)
    return list(names) if names else None


def fresh_robust_ser_config(model_args: RewardModelArguments, train_dataset: Dataset, training_args, codebook_size):
    """The RobustSER config of a model trained from scratch: the flags' sizes, the dataset's emotion labels."""
    return build_robust_ser_config(
        model_args.vocab_size or codebook_size or 6561,
        label_names_of(train_dataset, training_args.label_column),
        hidden_size=model_args.hidden_size,
        num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=model_args.num_attention_heads,
        intermediate_size=model_args.intermediate_size,
        hidden_dropout_prob=model_args.hidden_dropout_prob,
        attention_dropout=model_args.attention_dropout,
        max_position_embeddings=model_args.max_position_embeddings,
        pooling=model_args.pooling,
        speech_tokenizer_version=model_args.speech_tokenizer_version,
    )


def _load_with_remote_code_flag(training_args, model_args: RewardModelArguments) -> None:
    """A saved model is loaded by the trainer with `model_init_kwargs`; `--trust_remote_code` joins them."""
    model_init_kwargs = dict(training_args.model_init_kwargs or {})
    model_init_kwargs.setdefault("trust_remote_code", model_args.trust_remote_code)
    training_args.model_init_kwargs = model_init_kwargs


def main_multitask(
    script_args: RewardScriptArguments, training_args: MultiTaskRewardConfig, model_args: RewardModelArguments
):
    from transformers import AutoConfig

    from rrpo_hf import RobustMultiTaskRMConfig, RobustSERForMultiTaskReward

    set_seed(training_args.seed)
    resume_from_checkpoint = resolve_resume_from_checkpoint(
        training_args.resume_from_checkpoint, training_args.output_dir
    )
    if script_args.dataset_name is None:
        train_dataset, eval_datasets, codebook_size, asr_labels = load_quality_datasets(script_args)
    else:
        train_dataset, eval_datasets, codebook_size = load_datasets(script_args)
        asr_labels = asr_symbols_of(train_dataset, training_args.text_column) if "asr" in training_args.tasks else None
    quality_labels = quality_labels_of(train_dataset, training_args.quality_column)
    heads = dict(tasks=list(training_args.tasks), asr_labels=asr_labels or None)
    if quality_labels is not None:
        heads["quality_labels"] = quality_labels

    if model_args.model_name_or_path is not None:
        path = model_args.model_name_or_path
        config = AutoConfig.from_pretrained(path, trust_remote_code=model_args.trust_remote_code)
        if config.model_type == "robust_ser":
            # An emotion RM starts the shared encoder and the emotion head; the other heads start fresh.
            model = RobustSERForMultiTaskReward.from_robust_ser(
                path, trust_remote_code=model_args.trust_remote_code, **heads
            )
            training_args.model_init_kwargs = None
        else:
            model = path
            _load_with_remote_code_flag(training_args, model_args)
    else:
        ser_config = fresh_robust_ser_config(model_args, train_dataset, training_args, codebook_size)
        model = RobustMultiTaskRMConfig.from_robust_ser_config(ser_config, **heads)

    trainer = MultiTaskRewardTrainer(
        model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_datasets or None
    )
    return _train_evaluate_save(trainer, script_args, training_args, eval_datasets, resume_from_checkpoint)


def check_model_path(model_args: RewardModelArguments) -> None:
    """A missing local `--model_name_or_path` fails now, naming it, before the datasets or any Hub call."""
    if model_args.model_name_or_path is not None:
        model_args.model_name_or_path = require_saved_model(
            model_args.model_name_or_path, "reward model", "accelerate launch examples/train_rm.py"
        )


def main(script_args: RewardScriptArguments, training_args: RobustRewardConfig, model_args: RewardModelArguments):
    check_model_path(model_args)
    if is_multitask_run(training_args):
        return main_multitask(script_args, training_args, model_args)
    set_seed(training_args.seed)
    resume_from_checkpoint = resolve_resume_from_checkpoint(
        training_args.resume_from_checkpoint, training_args.output_dir
    )
    train_dataset, eval_datasets, codebook_size = load_datasets(script_args)

    if model_args.model_name_or_path is not None:
        model = model_args.model_name_or_path
        _load_with_remote_code_flag(training_args, model_args)
    else:
        model = fresh_robust_ser_config(model_args, train_dataset, training_args, codebook_size)

    trainer = RobustRewardTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_datasets or None,
    )
    return _train_evaluate_save(trainer, script_args, training_args, eval_datasets, resume_from_checkpoint)


#: A multi-task RM's ASR head counts as learned below this CER (the untrained CTC head's all-blank output: 1.0).
USABLE_MAX_ASR_CER = 0.5


def majority_share(dataset: Dataset, column: str) -> float:
    """The share of the most common value of `column`: the accuracy of always guessing it."""
    from collections import Counter

    counts = Counter(dataset[column])
    return max(counts.values()) / max(sum(counts.values()), 1)


def usability_line(trainer, eval_datasets: dict[str, Dataset], training_args) -> str:
    """One line: whether the saved reward model learned what the next stage needs, judged on its first eval set."""
    if not eval_datasets:
        return "usable? not checked: no evaluation set (add a test split or --extra_eval_datasets)."
    name, dataset = next(iter(eval_datasets.items()))
    problems, figures = [], []
    emotion = trainer.eval_results.get(name)
    if emotion is not None and training_args.label_column in dataset.column_names:
        floor = majority_share(dataset, training_args.label_column)
        figures.append(f"emotion WA {100 * emotion['wa']:.1f}% (majority class {100 * floor:.1f}%)")
        if emotion["wa"] <= floor + 0.05:
            problems.append("the emotion head is at the majority-class level")
    tasks = getattr(trainer, "task_eval_results", {}).get(name, {})
    if "asr_cer" in tasks:
        figures.append(f"ASR CER {100 * tasks['asr_cer']:.1f}%")
        if tasks["asr_cer"] > USABLE_MAX_ASR_CER:
            problems.append(
                f"the ASR head's CER is above {100 * USABLE_MAX_ASR_CER:.0f}% (CTC starts on an all-blank plateau: "
                "train longer or at a larger lr, as recipes/toy/rm_multitask.yaml does)"
            )
    if "quality_accuracy" in tasks and training_args.quality_column in dataset.column_names:
        floor = majority_share(dataset, training_args.quality_column)
        figures.append(f"quality accuracy {100 * tasks['quality_accuracy']:.1f}% (majority class {100 * floor:.1f}%)")
        if tasks["quality_accuracy"] <= floor + 0.05:
            problems.append("the quality head is at the majority-class level")
    where = f"on {name}: {', '.join(figures)}"
    if problems:
        return f"NOT usable as a reward ({where}): {'; '.join(problems)}."
    return f"usable: every head learned ({where})."


def _train_evaluate_save(trainer, script_args, training_args, eval_datasets, resume_from_checkpoint):
    train_result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.save_metrics("train", train_result.metrics)
    if eval_datasets:
        trainer.save_metrics("eval", trainer.evaluate())
    # Recorded so launch tests (and users) can see that every process joined the run.
    trainer.save_metrics(
        "run",
        {
            "num_processes": trainer.accelerator.num_processes,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "global_step": trainer.state.global_step,
        },
    )
    trainer.save_model(training_args.output_dir)

    if trainer.is_world_process_zero():
        print(f"\nReward model saved to {training_args.output_dir}")
        if trainer.eval_results or getattr(trainer, "task_eval_results", None):
            print(trainer.eval_table())
        print(usability_line(trainer, eval_datasets, training_args))
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    return trainer


def toy_recipe_for(args: list[str]) -> Path:
    """The argument-free run's recipe: the robust emotion RM, or with `--tasks` naming another head the multi-task
    RM's (whose CTC head needs its longer schedule to leave the all-blank plateau)."""
    tasks = []
    for i, arg in enumerate(args):
        if arg == "--tasks":
            values = itertools.takewhile(lambda value: not value.startswith("--"), args[i + 1 :])
            tasks = [task for value in values for task in value.split(",")]
        elif arg.startswith("--tasks="):
            tasks = arg.split("=", 1)[1].split(",")
    return MULTITASK_TOY_RECIPE if any(task.strip() not in ("", "emotion") for task in tasks) else TOY_RECIPE


def make_parser() -> ScriptParser:
    # MultiTaskRewardConfig is RobustRewardConfig plus the --tasks options; without --tasks nothing else changes.
    return ScriptParser(
        (RewardScriptArguments, MultiTaskRewardConfig, RewardModelArguments), toy_config=toy_recipe_for
    )


if __name__ == "__main__":
    run_script(make_parser().parse_args_and_config, main)
