"""`DiffROTrainer` under ZeRO-3 with `zero3_init_flag: true`, models given as saved folders (as `examples/rrpo.py`).

    accelerate launch --config_file tests/accelerate_configs/cpu_zero3_init.yaml \
        tests/scripts/diffro_zero3_paths.py --output_dir /tmp/z3 --models_dir <folders written by the test>

With the recipe's `zero3_init_flag: true`, every `from_pretrained` inside the trainer runs under
`deepspeed.zero.Init` and would give partitioned (shape-(0,)) parameters. This script trains full fine-tuning and
LoRA, each with offline and online rollouts and β > 0, from `<models_dir>/{policy,reward_model,judge}` (and a trained
LoRA adapter from `<models_dir>/adapter`, whose reference must be its own frozen copy) and checks,
inside the launched processes: the policy is partitioned, the reward model and judge are plain frozen modules with
full weights that equal their saved files after training, the full fine-tuning reference is a sharded DeepSpeed
engine (no full copy), the loss is finite, the KL is 0 at step 1 and positive at step 2, and the policy changed.
A reward model passed as an already partitioned module is gathered into a full copy. The `asr` flag adds the
multi-task reward model `<models_dir>/multitask_rm` (loaded with AutoModel) in `reward_funcs`: its ASR and quality
heads must be rewards of a full, frozen, unchanged copy on every rank, logged as `rewards/asr/mean` and
`rewards/quality/mean`, and gated ASR must still train the policy. A failed check raises; rank 0 writes
`<output_dir>/summary.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from rrpo_hf.script_utils import end_distributed_run
from rrpo_hf.testbed import make_emotion_corpus
from rrpo_hf.trainers import DiffROConfig, DiffROTrainer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--models_dir", required=True, help="Holds the saved policy, reward_model and judge folders.")
    parser.add_argument("--codebook_size", type=int, default=512)
    parser.add_argument(
        "--cases",
        default="full:offline,full:online,lora:offline,lora:online,adapter:offline,full:offline:rm_module,"
        "full:offline:asr",
        help="finetuning:rollout[:flag]; finetuning: full, lora (a new adapter) or adapter "
        "(<models_dir>/adapter, trained); flags: rm_module (the reward model passed as an already partitioned "
        "module), asr (also the ASR and quality rewards of <models_dir>/multitask_rm, an ASR gate on the emotion "
        "reward).",
    )
    return parser.parse_args()


def gathered_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full parameters of a (possibly ZeRO-3-partitioned) module on every rank (collective when partitioned)."""
    import deepspeed

    named = list(module.named_parameters())
    partitioned = [param for _, param in named if hasattr(param, "ds_id")]
    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None, enabled=bool(partitioned)):
        return {name: param.detach().float().cpu().clone() for name, param in named}


def check_classifier(classifier, folder: Path, what: str) -> None:
    import deepspeed

    partitioned = any(hasattr(param, "ds_id") for param in classifier.parameters())
    if isinstance(classifier, deepspeed.DeepSpeedEngine) or partitioned:
        raise AssertionError(f"{what}: the model is partitioned or wrapped; it must be a plain module, full weights.")
    if classifier.training or any(param.requires_grad for param in classifier.parameters()):
        raise AssertionError(f"{what}: the model is in training mode or has trainable parameters.")
    saved = load_file(str(folder / "model.safetensors"))
    state = classifier.state_dict()
    for name, value in saved.items():
        if not torch.equal(state[name].cpu(), value):
            raise AssertionError(f"{what}: parameter {name} differs from the saved weights {tuple(value.shape)}.")


def run_case(
    cli, finetuning: str, rollout: str, dataset, eval_dataset, rm_as_module: bool = False, asr: bool = False
) -> dict:
    models = Path(cli.models_dir)
    flags = (", partitioned reward-model module" if rm_as_module else "") + (", + ASR reward" if asr else "")
    what = f"[{finetuning}, {rollout}{flags}]"
    peft_config = None
    if finetuning == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=True)
    args = DiffROConfig(
        output_dir=os.path.join(
            cli.output_dir, f"{finetuning}_{rollout}{'_rm_module' if rm_as_module else ''}{'_asr' if asr else ''}"
        ),
        rollout=rollout,
        beta=0.1,
        max_steps=2,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        learning_rate=1e-3 if finetuning == "full" else 1e-2,
        logging_steps=1,
        max_new_tokens=16,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        ddp_backend="gloo",
        seed=0,
        data_seed=0,
        save_merged=False,  # merging a LoRA adapter needs the full base weights, which ZeRO-3 shards
        # emotion, asr, quality; a soft gate, so that every sample still trains (the models are untrained)
        reward_weights=[1.0, 0.5, 0.25] if asr else None,
        reward_gate="asr" if asr else None,
        reward_gate_threshold=-5.0 if asr else None,
        reward_gate_temperature=2.0,
    )
    reward_model = str(models / "reward_model")
    if rm_as_module:
        from transformers import AutoModelForAudioClassification

        # What a user gets from from_pretrained once the config registers ZeRO-3: a module holding shards only.
        reward_model = AutoModelForAudioClassification.from_pretrained(reward_model)
        if not all(param.numel() == 0 for param in reward_model.parameters()):
            raise AssertionError(f"{what}: from_pretrained did not partition the reward model; nothing is tested.")
    model, processing_class = str(models / "policy"), None
    if finetuning == "adapter":
        from peft import PeftModel
        from transformers import AutoTokenizer

        from rrpo_hf.models.cosyvoice2 import CosyVoice2LM

        # A trained (non-zero) LoRA adapter on a base partitioned by zero.Init: its reference is its own copy.
        base = CosyVoice2LM.from_pretrained(model)
        processing_class = AutoTokenizer.from_pretrained(model)
        model = PeftModel.from_pretrained(base, str(models / "adapter"), is_trainable=True)
    trainer = DiffROTrainer(
        model=model,
        processing_class=processing_class,
        reward_model=reward_model,
        judge_model=str(models / "judge"),
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        peft_config=peft_config,
        reward_funcs=[str(models / "multitask_rm")] if asr else None,
    )
    if asr:
        if trainer.reward_func_names != ["emotion", "asr", "quality"]:
            raise AssertionError(f"{what}: reward functions {trainer.reward_func_names}.")
        check_classifier(trainer.reward_funcs[1].model, models / "multitask_rm", f"{what} multi-task RM before")
    if trainer.accelerator.num_processes != 2:
        raise AssertionError(f"{what}: {trainer.accelerator.num_processes} process(es) joined, expected 2.")
    policy = trainer.accelerator.unwrap_model(trainer.model)
    if not any(hasattr(param, "ds_id") for param in policy.parameters()):
        raise AssertionError(f"{what}: the policy is not partitioned; zero3_init_flag did not take effect.")
    check_classifier(trainer.reward_model, models / "reward_model", f"{what} reward model before training")
    check_classifier(trainer.judge_model, models / "judge", f"{what} judge before training")
    if finetuning == "full":
        import deepspeed

        ref = trainer.ref_model
        if not isinstance(ref, deepspeed.DeepSpeedEngine):
            raise AssertionError(f"{what}: the reference is a {type(ref).__name__}, not a ZeRO-3 inference engine.")
        local = sum(param.ds_tensor.numel() for param in ref.module.parameters())
        full = sum(param.ds_numel for param in ref.module.parameters())
        if not local < full:
            raise AssertionError(f"{what}: the reference holds {local} of {full} elements on one rank: not sharded.")
    elif trainer.ref_model is not None:
        raise AssertionError(f"{what}: LoRA needs no reference copy, got {type(trainer.ref_model).__name__}.")
    if (trainer.ref_adapter_name == "ref") != (finetuning == "adapter"):
        raise AssertionError(f"{what}: reference adapter {trainer.ref_adapter_name!r}.")

    before = gathered_state(policy)
    trainer.train()
    after = gathered_state(policy)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    kl = [entry["kl"] for entry in trainer.state.log_history if "kl" in entry]
    if len(losses) != 2 or not all(math.isfinite(loss) for loss in losses):
        raise AssertionError(f"{what}: losses {losses}.")
    if len(kl) != 2 or abs(kl[0]) > 1e-6 or not kl[1] > 0:
        raise AssertionError(f"{what}: KL {kl}, expected 0 at step 1 (policy = reference) and > 0 at step 2.")
    trained = [name for name, param in policy.named_parameters() if param.requires_grad]
    moved = [name for name in trained if not torch.equal(before[name], after[name])]
    if not moved:
        raise AssertionError(f"{what}: no trained policy parameter changed in 2 steps.")
    frozen_moved = [name for name in before if name not in trained and not torch.equal(before[name], after[name])]
    if frozen_moved:
        raise AssertionError(f"{what}: frozen policy parameters changed: {frozen_moved[:3]}.")
    check_classifier(trainer.reward_model, models / "reward_model", f"{what} reward model after training")
    if asr:
        check_classifier(trainer.reward_funcs[1].model, models / "multitask_rm", f"{what} multi-task RM after")
        logged = [entry for entry in trainer.state.log_history if "rewards/asr/mean" in entry]
        if len(logged) != 2 or not all(math.isfinite(entry["rewards/quality/mean"]) for entry in logged):
            raise AssertionError(
                f"{what}: rewards/asr/mean and rewards/quality/mean are not logged at every step: {logged}."
            )
    metrics = trainer.evaluate() if rollout == "offline" else {}
    keys = ("eval_reward", "eval_judge_reward") + (("eval_rewards/asr/mean",) if asr else ())
    if metrics and not all(math.isfinite(metrics[key]) for key in keys):
        raise AssertionError(f"{what}: evaluation metrics {metrics}.")
    check_classifier(trainer.judge_model, models / "judge", f"{what} judge after evaluation")
    return {
        "losses": losses,
        "kl": kl,
        "moved": len(moved),
        "trained": len(trained),
        "eval_judge_accuracy": metrics.get("eval_judge_accuracy"),
    }


def main():
    cli = parse_args()
    corpus = make_emotion_corpus(num_train=16, num_test=4, codebook_size=cli.codebook_size, seed=0)
    summary = {}
    for case in [c for c in cli.cases.split(",") if c]:
        finetuning, rollout, *flags = case.split(":")
        summary[case] = run_case(
            cli,
            finetuning,
            rollout,
            corpus["train"],
            corpus["test"],
            rm_as_module="rm_module" in flags,
            asr="asr" in flags,
        )
    if int(os.environ.get("RANK", "0")) == 0:
        Path(cli.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(cli.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"DIFFRO ZERO-3 PATHS OK: {json.dumps(summary)}")


if __name__ == "__main__":
    main()
    end_distributed_run()
