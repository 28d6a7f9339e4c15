"""GRPO of the CosyVoice2 / CosyVoice3 LM on the same rewards as DiffRO / RRPO (docs/grpo.md).

With no arguments it runs GRPO on the built-in testbed with the toy policy and reward model that the earlier examples
saved, evaluates the policy before and after (reward model, testbed oracle), and writes the policy to
`outputs/grpo_policy`:

    accelerate launch examples/sft.py        # -> outputs/sft_policy
    accelerate launch examples/train_rm.py   # -> outputs/reward_model
    accelerate launch examples/grpo.py       # -> outputs/grpo_policy (= --config recipes/toy/grpo.yaml)

The reward is the one DiffRO / RRPO optimise: the emotion RM's -L_ser (a robust RM's with its adversarial term,
"GRPO-robust"), plus the heads of multi-task RMs in `--reward_funcs`, weighted by `--reward_weights`. Each prompt is
generated `--num_generations` times with CosyVoice's RAS sampling; `--per_device_train_batch_size` counts completions
(a multiple of `num_generations`), as in TRL. `--resume_from_checkpoint true` resumes from the latest checkpoint.

The real model on GPUs:

    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml examples/grpo.py \
        --config recipes/cosyvoice2-0.5b/grpo_lora.yaml \
        --model_name_or_path <SFT'd CosyVoice2 dir> --reward_model_path <RM> --dataset_name <dataset>
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from transformers import set_seed
from trl import ModelConfig

from rrpo_hf import CosyVoiceGRPOConfig, CosyVoiceGRPOTrainer
from rrpo_hf.script_utils import ScriptParser, end_distributed_run, resolve_resume_from_checkpoint


TOY_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "grpo.yaml"


def _rrpo_example():
    # The data and stage-output helpers are rrpo.py's: one definition for both policy scripts.
    spec = importlib.util.spec_from_file_location("_rrpo_example", Path(__file__).with_name("rrpo.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


_rrpo = _rrpo_example()


@dataclass
class GRPOScriptArguments(_rrpo.RRPOScriptArguments):
    """Data, reward model and output options, as examples/rrpo.py (without `dataset_name`: the testbed corpus)."""


def main(
    script_args: GRPOScriptArguments, training_args: CosyVoiceGRPOConfig, model_args: ModelConfig
) -> CosyVoiceGRPOTrainer:
    set_seed(training_args.seed)
    resume_from_checkpoint = resolve_resume_from_checkpoint(
        training_args.resume_from_checkpoint, training_args.output_dir
    )
    trainer = _rrpo.build_policy_trainer(CosyVoiceGRPOTrainer, script_args, training_args, model_args)
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
    trainer.save_model(training_args.output_dir)
    if script_args.export_cosyvoice:
        trainer.export_cosyvoice(os.path.join(training_args.output_dir, "llm.pt"))
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
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    return trainer


def make_parser() -> ScriptParser:
    return ScriptParser((GRPOScriptArguments, CosyVoiceGRPOConfig, ModelConfig), toy_config=TOY_RECIPE)


if __name__ == "__main__":
    script_args, training_args, model_args = make_parser().parse_args_and_config()
    main(script_args, training_args, model_args)
    end_distributed_run()
