"""RRPO (stage 2): differentiable reward optimisation of the CosyVoice2 LM against a frozen robust reward model.

With no arguments it runs RRPO on the built-in testbed with the toy policy and reward model that the earlier
examples saved, evaluates the policy before and after (reward model, testbed oracle), and writes the policy to
`outputs/rrpo_policy`:

    accelerate launch examples/sft.py        # -> outputs/sft_policy
    accelerate launch examples/train_rm.py   # -> outputs/reward_model
    accelerate launch examples/rrpo.py       # -> outputs/rrpo_policy (= --config recipes/toy/rrpo.yaml)

Without `--config` and `--dataset_name` the toy recipe is read first (flags override it); with a recipe or a dataset,
keys the recipe and flags do not set keep `DiffROConfig`'s defaults (the papers' settings). LoRA runs save the merged
policy (`--save_merged`, default) or the adapter, never both; `--resume_from_checkpoint true` resumes from the
latest checkpoint in `output_dir`.

DiffRO vs RRPO is the reward model folder: the reward computes the loss its RM was trained with (a vanilla RM:
DiffRO, recipes/toy/diffro.yaml; a robust RM: RRPO, rrpo.yaml); `--reward_adv_alpha` etc. override it (logged).

Several rewards (docs/architecture.md, "Several rewards"): an ensemble of emotion reward models, the ASR and quality
heads of a multi-task reward model, their weights, and an ASR gate on the emotion reward
(recipes/toy/rrpo_multi_reward.yaml):

    accelerate launch examples/train_rm.py --config recipes/toy/rm_multitask.yaml   # -> outputs/multitask_rm
    accelerate launch examples/rrpo.py --ensemble_reward_model_paths outputs/reward_model_base \
        --reward_aggregation min --reward_funcs outputs/multitask_rm --reward_weights 1.0 0.5 0.2 \
        --reward_gate asr --reward_gate_threshold -1.5

The real model on GPUs:

    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml examples/rrpo.py \
        --config recipes/cosyvoice2-0.5b/rrpo_lora.yaml \
        --model_name_or_path $SFT_DIR --reward_model_path $RM_DIR --dataset_name $TOKEN_DATASET
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict
from transformers import set_seed
from trl import ModelConfig, ScriptArguments

from rrpo_hf import DiffROConfig, DiffROTrainer, OracleScorer
from rrpo_hf.models.cosyvoice2.loading import load_cosyvoice2_lm_and_tokenizer, lora_config_from_model_args
from rrpo_hf.script_utils import (
    ScriptParser,
    load_dataset_source,
    require_saved_model,
    resolve_path,
    resolve_resume_from_checkpoint,
    run_script,
)


# The argument-free run (no --config, no --dataset_name) is this recipe; every other run starts from the library's
# defaults (DiffROConfig: the papers' settings).
TOY_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "rrpo.yaml"


@dataclass
class RRPOScriptArguments(ScriptArguments):
    """Data, reward model and output options. Without `dataset_name` the built-in testbed corpus is used."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Dataset with `text`, `emotion` and (offline rollouts) `speech_tokens`: a `save_to_disk` folder, "
            "a folder of data files (train.jsonl, ...), one data file (.jsonl, .json, .csv, .parquet) or a Hub id "
            "(with --dataset_config). Empty: the built-in testbed corpus."
        },
    )
    reward_model_path: str = field(
        default="outputs/reward_model",
        metadata={
            "help": "The frozen (robust) emotion reward model: folder or Hub id. Default: outputs/reward_model."
        },
    )
    ensemble_reward_model_paths: list[str] | None = field(
        default=None,
        metadata={
            "help": "More emotion reward models (folders or Hub ids). With reward_model_path they form an ensemble "
            "whose per-sample rewards --reward_aggregation combines (mean, min, mean_minus_std). Default: none, one "
            "emotion reward model."
        },
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Extra reward models (folders or Hub ids), after the emotion reward. A multi-task reward model "
            "(train_rm.py --tasks emotion,asr,quality) gives one reward per non-emotion head, 'asr' and 'quality'; "
            "an emotion classifier gives an extra emotion reward. Weight them with --reward_weights (emotion "
            "reward first) and gate the emotion reward with --reward_gate asr --reward_gate_threshold T. Default: "
            "none."
        },
    )
    judge_model_path: str | None = field(
        default=None,
        metadata={"help": "An independent emotion classifier used only in evaluation (reward-hacking monitor)."},
    )
    tokenizer_path: str | None = field(
        default=None,
        metadata={"help": "Text tokenizer folder. Default: the policy folder, or CosyVoice-BlankEN of a release."},
    )
    testbed_language: str = field(default="alpha", metadata={"help": "Testbed language of the toy corpus."})
    testbed_num_train: int = field(default=1200, metadata={"help": "Testbed training utterances."})
    testbed_num_test: int = field(default=300, metadata={"help": "Testbed evaluation utterances."})
    testbed_codebook_size: int = field(default=512, metadata={"help": "Testbed codebook (= the toy models')."})
    testbed_seed: int = field(default=0, metadata={"help": "Seed of the testbed corpus (same as sft.py/train_rm.py)."})
    max_eval_samples: int | None = field(default=64, metadata={"help": "Evaluate on at most this many test rows."})
    evaluate_before_training: bool = field(
        default=True, metadata={"help": "Also evaluate the starting policy, to show the change RRPO makes."}
    )
    export_cosyvoice: bool = field(
        default=False, metadata={"help": "Also write `<output_dir>/llm.pt` in CosyVoice2's released format."}
    )


def require_stage_output(path: str, what: str, command: str) -> str:
    """The saved model of an earlier stage: a missing local folder fails now, with the command that writes it."""
    return require_saved_model(path, what, command)


def load_datasets(script_args: RRPOScriptArguments) -> tuple[Dataset, Dataset | None, object | None]:
    """(train, eval or None, testbed oracle or None)."""
    if script_args.dataset_name is None:
        from rrpo_hf.testbed import Oracle, TestbedConfig, make_emotion_corpus

        corpus = make_emotion_corpus(
            language=script_args.testbed_language,
            num_train=script_args.testbed_num_train,
            num_test=script_args.testbed_num_test,
            codebook_size=script_args.testbed_codebook_size,
            seed=script_args.testbed_seed,
        )
        oracle = Oracle(TestbedConfig(codebook_size=script_args.testbed_codebook_size))
    else:
        corpus = load_dataset_source(script_args.dataset_name, script_args.dataset_config)
        oracle = None
    if isinstance(corpus, Dataset):
        corpus = DatasetDict({script_args.dataset_train_split: corpus})
    if script_args.dataset_train_split not in corpus:
        raise ValueError(f"The dataset has splits {list(corpus)}, not '{script_args.dataset_train_split}'.")
    evaluation = corpus.get(script_args.dataset_test_split)
    if evaluation is not None and script_args.max_eval_samples is not None:
        evaluation = evaluation.select(range(min(script_args.max_eval_samples, len(evaluation))))
    return corpus[script_args.dataset_train_split], evaluation, oracle


def usability_line(trainer: DiffROTrainer, before: dict, after: dict) -> str:
    """One line: whether the run did what it is for: the gate (if any) let samples through, and the eval reward
    (and the testbed oracle's emotion score, when there is one) moved the right way."""
    args = trainer.args
    logs = [entry for entry in trainer.state.log_history if "reward" in entry and "eval_reward" not in entry]
    problems, figures = [], []
    if args.reward_gate is not None:
        weights = [entry["gate_weight"] for entry in logs if "gate_weight" in entry]
        gating = [entry.get(f"reward/{args.reward_gate}") for entry in logs]
        gating = [value for value in gating if value is not None]
        passed = sum(weights) / len(weights) if weights else 0.0
        figures.append(f"gate passed {100 * passed:.0f}% of samples")
        if passed < 0.05:
            mean = f"{sum(gating) / len(gating):.2f}" if gating else "?"
            problems.append(
                f"the {args.reward_gate} gate passed (almost) no sample, so the emotion reward did not train the "
                f"policy (mean reward/{args.reward_gate} {mean} < reward_gate_threshold "
                f"{args.reward_gate_threshold:g}): lower --reward_gate_threshold, or start from a policy whose speech "
                "the ASR head reads"
            )
    for key, name in (("eval_reward", "eval reward"), ("eval_oracle_emotion_score", "oracle emotion score")):
        old, new = before.get(key.replace("eval_", "eval_before_", 1)), after.get(key)
        if old is not None and new is not None:
            figures.append(f"{name} {old:.3f} -> {new:.3f}")
            if new <= old:
                problems.append(f"the {name} did not rise")
    summary = ", ".join(figures) or "no evaluation"
    if problems:
        return f"NOT usable: {'; '.join(problems)} ({summary})."
    return f"usable: {summary}."


def save_policy(trainer: DiffROTrainer, script_args: RRPOScriptArguments, output_dir: str) -> None:
    # The trainer writes the merged model or the adapter (--save_merged), with a card saying which; push_to_hub
    # saves the same way, so the pushed folder is this one.
    trainer.save_model(output_dir)
    if script_args.export_cosyvoice:
        trainer.export_cosyvoice(os.path.join(output_dir, "llm.pt"))


def build_policy_trainer(trainer_class, script_args, training_args, model_args):
    """Every path checked before anything loads, then the datasets, the SFT policy and its tokenizer, and the policy
    trainer (`DiffROTrainer` here, `CosyVoiceGRPOTrainer` in examples/grpo.py) on the reward models."""
    model_path = model_args.model_name_or_path or "outputs/sft_policy"
    model_path = require_stage_output(model_path, "SFT policy", "accelerate launch examples/sft.py")
    if script_args.tokenizer_path:
        resolve_path(script_args.tokenizer_path, "tokenizer")
    if script_args.judge_model_path:
        require_saved_model(script_args.judge_model_path, "judge model")
    require_stage_output(script_args.reward_model_path, "reward model", "accelerate launch examples/train_rm.py")
    for path in script_args.ensemble_reward_model_paths or []:
        require_stage_output(path, "ensemble reward model", "accelerate launch examples/train_rm.py")
    for path in script_args.reward_funcs or []:
        require_stage_output(
            path,
            "reward model of --reward_funcs",
            "accelerate launch examples/train_rm.py --tasks emotion,asr,quality",
        )
    train_dataset, eval_dataset, oracle = load_datasets(script_args)
    model, tokenizer = load_cosyvoice2_lm_and_tokenizer(
        model_path,
        script_args.tokenizer_path,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
    )

    is_peft = hasattr(model, "peft_config")
    if is_peft and model_args.use_peft:
        print(f"{model_path} is a LoRA adapter: training it further (the --lora_* settings do not apply).")
    reward_model = script_args.reward_model_path
    if script_args.ensemble_reward_model_paths:
        reward_model = [reward_model, *script_args.ensemble_reward_model_paths]
    return trainer_class(
        model=model,
        reward_model=reward_model,
        reward_funcs=script_args.reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        # A LoRA-SFT adapter folder arrives as a PeftModel: its adapter trains on (and is its own KL reference).
        peft_config=lora_config_from_model_args(model_args) if model_args.use_peft and not is_peft else None,
        judge_model=script_args.judge_model_path,
        eval_scorers=None if oracle is None else [OracleScorer(oracle)],
    )


def main(script_args: RRPOScriptArguments, training_args: DiffROConfig, model_args: ModelConfig) -> DiffROTrainer:
    # Before anything random (LoRA initialisation): the same seed gives the same policy.
    set_seed(training_args.seed)
    resume_from_checkpoint = resolve_resume_from_checkpoint(
        training_args.resume_from_checkpoint, training_args.output_dir
    )
    trainer = build_policy_trainer(DiffROTrainer, script_args, training_args, model_args)
    if trainer.is_world_process_zero() and len(trainer.reward_funcs) > 1:
        weighted = ", ".join(f"{name} x {w:g}" for name, w in zip(trainer.reward_func_names, trainer.reward_weights))
        print(f"Reward functions (weight): {weighted}")
    before = (
        trainer.evaluate(metric_key_prefix="eval_before")
        if trainer.eval_dataset and script_args.evaluate_before_training
        else {}
    )
    train_result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.save_metrics("train", train_result.metrics)
    after = trainer.evaluate() if trainer.eval_dataset is not None else {}
    if after:
        trainer.save_metrics("eval", {**before, **after})
    # Recorded so launch tests (and users) can see that every process joined the run.
    trainer.save_metrics(
        "run",
        {
            "num_processes": trainer.accelerator.num_processes,
            "distributed_type": str(trainer.accelerator.distributed_type),
        },
    )
    save_policy(trainer, script_args, training_args.output_dir)

    if trainer.is_world_process_zero():
        print(f"\n{trainer.method_name} policy saved to {training_args.output_dir}")
        if after:
            print(f"{'metric':<28}{'before':>10}{'after':>10}")
            for key, value in after.items():
                if key.endswith(("_runtime", "_samples")):
                    continue
                name = key.removeprefix("eval_")
                old = before.get(f"eval_before_{name}")
                print(f"{name:<28}{'' if old is None else f'{old:.4f}':>10}{value:>10.4f}")
        print(usability_line(trainer, before, after))
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    return trainer


def make_parser() -> ScriptParser:
    return ScriptParser((RRPOScriptArguments, DiffROConfig, ModelConfig), toy_config=TOY_RECIPE)


if __name__ == "__main__":
    run_script(make_parser().parse_args_and_config, main)
