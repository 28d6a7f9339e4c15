"""Supervised fine-tuning of the CosyVoice2 LM on (instruction, text, speech tokens): the paper's "+SFT" baseline.

`CosyVoice2SFTTrainer` (a `transformers.Trainer` that saves LoRA runs merged) on `CosyVoice2LM` with
`DataCollatorForCosyVoice2` (targets: speech tokens + eos, CosyVoice2's loss). With no arguments it trains a tiny
policy from scratch on 4800 utterances of the built-in testbed (language `alpha`, instruct-emotion prompts) on CPU,
saves model + tokenizer to `outputs/sft_policy`, prints the final eval loss and the lengths of a few generated
samples, and ends with one line: whether the policy speaks (the testbed oracle's CER on 32 test prompts <= 0.2):

    accelerate launch examples/sft.py     # = --config recipes/toy/sft.yaml

With a recipe or a dataset, keys the recipe and flags do not set keep `TrainingArguments`' defaults.
`--resume_from_checkpoint true` resumes from the latest checkpoint in `output_dir`. Several CPU processes (DDP or
DeepSpeed) additionally need `--ddp_backend gloo`.

The real model (LoRA or full fine-tuning of a `FunAudioLLM/CosyVoice2-0.5B` download) on GPUs:

    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml examples/sft.py \
        --config recipes/cosyvoice2-0.5b/sft_lora.yaml \
        --model_name_or_path $COSYVOICE2_DIR --dataset_name $TOKEN_DATASET  # text, speech_tokens, emotion

`--model_name_or_path` accepts a CosyVoice2 release dir (or its `llm.pt`; the text tokenizer is then read from
`<dir>/CosyVoice-BlankEN` unless `--tokenizer_path` says otherwise) or a `save_pretrained` folder of this library.
LoRA runs save the merged model (`--save_merged`, default) so that later stages load a plain `CosyVoice2LM`;
`--export_cosyvoice` also writes an `llm.pt` that CosyVoice2 itself loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict
from transformers import AutoModel, AutoTokenizer, Trainer, TrainingArguments, set_seed
from trl import ModelConfig, ScriptArguments

from rrpo_hf import CosyVoice2SFTTrainer, build_cosyvoice2_sft_collator, build_tiny_cosyvoice2_policy
from rrpo_hf.data.speech_lm_collator import DataCollatorForCosyVoice2
from rrpo_hf.data.validation import check_speech_lm_dataset
from rrpo_hf.models.cosyvoice2 import CosyVoice2LM
from rrpo_hf.models.cosyvoice2.generation import generate_speech_tokens, unwrap_for_generation
from rrpo_hf.models.cosyvoice2.loading import load_cosyvoice2_lm_and_tokenizer, lora_config_from_model_args
from rrpo_hf.models.cosyvoice2.tokenization import COSYVOICE2_END_OF_PROMPT
from rrpo_hf.script_utils import (
    ScriptParser,
    load_dataset_source,
    resolve_path,
    resolve_resume_from_checkpoint,
    run_script,
)
from rrpo_hf.testbed import Oracle, TestbedConfig, build_testbed_tokenizer


# The argument-free run (no --config, no --dataset_name) is this recipe; every other run starts from the library's
# defaults (transformers.TrainingArguments).
TOY_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "sft.yaml"


@dataclass
class SFTScriptArguments(ScriptArguments):
    """Data, tokenizer, toy-model and output options. Without `dataset_name` the built-in testbed corpus is used."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Dataset with `text`, `speech_tokens` and `emotion` or `instruction` columns: a `save_to_disk` "
            "folder, a folder of data files (train.jsonl, test.jsonl, ...), one data file (.jsonl, .json, .csv, "
            ".parquet; the train split) or a Hub id (with --dataset_config). Empty: the built-in testbed corpus."
        },
    )
    tokenizer_path: str | None = field(
        default=None,
        metadata={
            "help": "Text tokenizer: a `CosyVoice-BlankEN` folder or a `save_pretrained` tokenizer folder. Default: "
            "`<model dir>/CosyVoice-BlankEN` for a CosyVoice2 release, the model folder otherwise, or a tiny "
            "word-level tokenizer over the testbed phonemes for the toy model."
        },
    )
    instruction_template: str = field(
        default="en", metadata={"help": "Emotion instruction template ('en' = DiffRO's, 'zh', or a format string)."}
    )
    use_instruction: bool = field(
        default=True, metadata={"help": "Train instruct prompts (instruction<|endofprompt|>text); False: text only."}
    )
    max_text_length: int | None = field(default=None, metadata={"help": "Truncate text ids to this many tokens."})
    bistream_probability: float = field(
        default=0.0,
        metadata={
            "help": "Share of eligible rows (speech/text > 3) trained in CosyVoice2's bistream 5-text:15-speech "
            "layout, so the exported llm.pt also serves CosyVoice's streaming-text inference (upstream: 0.5)."
        },
    )
    testbed_language: str = field(default="alpha", metadata={"help": "Testbed language of the toy corpus."})
    testbed_num_train: int = field(default=1200, metadata={"help": "Testbed training utterances."})
    testbed_num_test: int = field(default=300, metadata={"help": "Testbed evaluation utterances."})
    testbed_codebook_size: int = field(
        default=512, metadata={"help": "Testbed speech codebook size (= the toy model's speech_token_size)."}
    )
    testbed_seed: int = field(default=0, metadata={"help": "Seed of the testbed corpus."})
    tiny_hidden_size: int = field(default=64, metadata={"help": "Toy policy (no model_name_or_path): hidden size."})
    tiny_num_hidden_layers: int = field(default=2, metadata={"help": "Toy policy: decoder layers."})
    tiny_num_attention_heads: int = field(default=4, metadata={"help": "Toy policy: attention heads."})
    tiny_num_key_value_heads: int = field(default=2, metadata={"help": "Toy policy: key/value heads (GQA)."})
    tiny_intermediate_size: int = field(default=128, metadata={"help": "Toy policy: MLP size."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on at most this many rows of the test split."}
    )
    num_generation_samples: int = field(
        default=4, metadata={"help": "After training, generate for this many eval prompts and print their lengths."}
    )
    oracle_check_prompts: int = field(
        default=32,
        metadata={
            "help": "Testbed runs: generate for this many test prompts after training and score them with the "
            "testbed oracle; the last line says whether the policy speaks (oracle CER <= usable_max_cer). 0: skip."
        },
    )
    usable_max_cer: float = field(
        default=0.2,
        metadata={"help": "Highest oracle CER (edits per phoneme) of a policy that counts as speaking. Default 0.2."},
    )
    save_merged: bool = field(
        default=True,
        metadata={
            "help": "With LoRA, save (and push) the merged CosyVoice2LM; False: the adapter, whose "
            "adapter_config.json names the base model. Never both in one folder; checkpoints hold the adapter."
        },
    )
    export_cosyvoice: bool = field(
        default=False, metadata={"help": "Also write `<output_dir>/llm.pt` in CosyVoice2's released format."}
    )


def load_sft_datasets(script_args: SFTScriptArguments) -> tuple[Dataset, Dataset | None, int | None]:
    """(train, eval or None, speech codebook size of the testbed or None)."""
    if script_args.dataset_name is None:
        from rrpo_hf.testbed import make_emotion_corpus

        corpus = make_emotion_corpus(
            language=script_args.testbed_language,
            num_train=script_args.testbed_num_train,
            num_test=script_args.testbed_num_test,
            codebook_size=script_args.testbed_codebook_size,
            seed=script_args.testbed_seed,
        )
        codebook_size = script_args.testbed_codebook_size
    else:
        corpus = load_dataset_source(script_args.dataset_name, script_args.dataset_config)
        codebook_size = None
    if isinstance(corpus, Dataset):
        corpus = DatasetDict({script_args.dataset_train_split: corpus})
    if script_args.dataset_train_split not in corpus:
        raise ValueError(
            f"{script_args.dataset_name or 'testbed'} has splits {list(corpus)}, not "
            f"'{script_args.dataset_train_split}'. "
            "Set --dataset_train_split."
        )
    train = corpus[script_args.dataset_train_split]
    missing = {"text", "speech_tokens"} - set(train.column_names)
    if missing:
        raise ValueError(f"The training split lacks the columns {sorted(missing)} (has {train.column_names}).")
    if script_args.use_instruction and not {"emotion", "instruction"} & set(train.column_names):
        raise ValueError(
            "Instruct training needs an `emotion` or `instruction` column; add one or pass --use_instruction false."
        )
    evaluation = corpus.get(script_args.dataset_test_split)
    if evaluation is not None and script_args.max_eval_samples is not None:
        evaluation = evaluation.select(range(min(script_args.max_eval_samples, len(evaluation))))
    return train, evaluation, codebook_size


def load_policy_and_tokenizer(script_args: SFTScriptArguments, model_args: ModelConfig, codebook_size: int | None):
    name = model_args.model_name_or_path
    if script_args.tokenizer_path:
        resolve_path(script_args.tokenizer_path, "tokenizer")
    if name is None:
        tokenizer = (
            AutoTokenizer.from_pretrained(script_args.tokenizer_path)
            if script_args.tokenizer_path
            else build_testbed_tokenizer(instruction_template=script_args.instruction_template)
        )
        if codebook_size is None:
            raise ValueError(
                "A fresh toy policy needs the testbed corpus (its codebook size); pass --model_name_or_path for other "
                "data."
            )
        model = build_tiny_cosyvoice2_policy(
            tokenizer,
            codebook_size,
            attn_implementation=model_args.attn_implementation,
            hidden_size=script_args.tiny_hidden_size,
            num_hidden_layers=script_args.tiny_num_hidden_layers,
            num_attention_heads=script_args.tiny_num_attention_heads,
            num_key_value_heads=script_args.tiny_num_key_value_heads,
            intermediate_size=script_args.tiny_intermediate_size,
        )
        return model, tokenizer

    name = resolve_path(name, "CosyVoice2 model")
    return load_cosyvoice2_lm_and_tokenizer(
        name, script_args.tokenizer_path, dtype=model_args.dtype, attn_implementation=model_args.attn_implementation
    )


def apply_lora(model: CosyVoice2LM, model_args: ModelConfig):
    from peft import get_peft_model

    return get_peft_model(model, lora_config_from_model_args(model_args))


def generation_report(trainer: Trainer, collator: DataCollatorForCosyVoice2, rows: Dataset, seed: int) -> list[dict]:
    """Generate for `rows` with the trained policy (all ranks, ZeRO-3-safe) and compare lengths to the references;
    each sample also carries its `tokens`."""
    if len(rows) == 0:
        return []
    batch = collator([rows[i] for i in range(len(rows))])
    device = trainer.accelerator.device
    end_of_prompt = collator.tokenizer.convert_tokens_to_ids(COSYVOICE2_END_OF_PROMPT)
    with unwrap_for_generation(trainer.model_wrapped, trainer.accelerator) as policy:
        tokens = generate_speech_tokens(
            policy,
            batch["text_ids"].to(device),
            batch["text_attention_mask"].to(device),
            prompt_end_token_id=end_of_prompt if collator.use_instruction else None,
            seed=seed,
        )
    return [
        {
            "text": rows[i]["text"],
            "reference_length": len(rows[i]["speech_tokens"]),
            "generated_length": len(t),
            "tokens": list(t),
        }
        for i, t in enumerate(tokens)
    ]


def oracle_check(samples: list[dict], rows: Dataset, codebook_size: int, max_cer: float) -> dict:
    """The testbed oracle's verdict on generated samples: mean CER and naturalness, and whether the policy speaks."""
    import numpy as np

    feature = rows.features.get("emotion")
    emotions = [feature.int2str(e) if hasattr(feature, "int2str") else e for e in rows["emotion"]]
    scores = Oracle(TestbedConfig(codebook_size=codebook_size)).score(
        rows["text"], [s["tokens"] for s in samples], emotions
    )
    cer, naturalness = float(np.mean(scores["cer"])), float(np.mean(scores["naturalness"]))
    return {"oracle_cer": cer, "oracle_naturalness": naturalness, "usable": cer <= max_cer}


def usability_line(check: dict | None, max_cer: float, num_prompts: int) -> str:
    """The last line of the run: whether the saved policy is one the next stage (DiffRO / RRPO) can start from."""
    if check is None:
        return (
            "usable? not checked (no testbed oracle for this dataset, or --oracle_check_prompts 0): listen to "
            "generated samples (--export_cosyvoice writes an llm.pt that CosyVoice2 synthesizes from)."
        )
    figures = (
        f"oracle CER {check['oracle_cer']:.3f}, naturalness {check['oracle_naturalness']:.2f} of 5 on "
        f"{num_prompts} test prompts"
    )
    if check["usable"]:
        return f"usable: the policy speaks ({figures}; CER <= {max_cer:g})."
    return (
        f"NOT usable: the policy does not speak yet ({figures}; CER > {max_cer:g}). Train on more texts "
        "(--testbed_num_train) or for more epochs (--num_train_epochs)."
    )


def check_export_options(script_args: SFTScriptArguments, model) -> None:
    """Fail before training when --export_cosyvoice could not be written at the end."""
    if script_args.export_cosyvoice and hasattr(model, "merge_and_unload") and not script_args.save_merged:
        raise ValueError(
            "--export_cosyvoice writes a full llm.pt from the saved model; combine it with --save_merged true."
        )


def save_policy(trainer: Trainer, script_args: SFTScriptArguments, output_dir: str) -> None:
    # The trainer writes the merged model or the adapter (--save_merged); push_to_hub saves the same way.
    trainer.save_model(output_dir)
    if script_args.export_cosyvoice:
        if trainer.is_world_process_zero():
            # Re-read the saved (merged or full) model: under ZeRO-3 the in-memory parameters are only shards.
            # AutoModel: the folder's config.json says CosyVoice2LM or CosyVoice3LM.
            AutoModel.from_pretrained(output_dir).save_cosyvoice(os.path.join(output_dir, "llm.pt"))
        trainer.accelerator.wait_for_everyone()


def main(script_args: SFTScriptArguments, training_args: TrainingArguments, model_args: ModelConfig) -> dict:
    # Before the toy policy and the LoRA adapter are initialised: the same seed gives the same model.
    set_seed(training_args.seed)
    resume_from_checkpoint = resolve_resume_from_checkpoint(
        training_args.resume_from_checkpoint, training_args.output_dir
    )
    train_dataset, eval_dataset, codebook_size = load_sft_datasets(script_args)
    model, tokenizer = load_policy_and_tokenizer(script_args, model_args, codebook_size)
    if model_args.use_peft:
        model = apply_lora(model, model_args)
    check_export_options(script_args, model)
    base_config = model.config if not hasattr(model, "get_base_model") else model.get_base_model().config

    collator = build_cosyvoice2_sft_collator(
        tokenizer,
        base_config,
        train_dataset.features.get("emotion"),
        instruction_template=script_args.instruction_template,
        use_instruction=script_args.use_instruction,
        max_text_length=script_args.max_text_length,
        bistream_probability=script_args.bistream_probability,
        seed=training_args.seed,
    )
    # Every row, before the first step (a bad one would otherwise stop the run when its batch comes up, or never).
    train_dataset = check_speech_lm_dataset(train_dataset, collator, split="train")
    eval_dataset = check_speech_lm_dataset(eval_dataset, collator, split="eval")
    trainer = CosyVoice2SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        save_merged=script_args.save_merged,
    )
    train_result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    metrics = {"train_loss": train_result.training_loss}
    if eval_dataset is not None:
        metrics.update(trainer.evaluate())
        trainer.save_metrics("eval", metrics)
    save_policy(trainer, script_args, training_args.output_dir)

    samples, check, samples_rows = [], None, None
    count = script_args.num_generation_samples
    testbed = codebook_size is not None and script_args.oracle_check_prompts > 0
    if testbed:
        count = max(count, script_args.oracle_check_prompts)
    if eval_dataset is not None and count > 0:
        rows = eval_dataset.select(range(min(count, len(eval_dataset))))
        samples = generation_report(trainer, collator, rows, seed=training_args.seed)
        if testbed:
            check = oracle_check(samples, rows, codebook_size, script_args.usable_max_cer)
            metrics.update({k: v for k, v in check.items() if k != "usable"})
            if trainer.is_world_process_zero():
                trainer.save_metrics("eval", metrics)
        samples, samples_rows = samples[: script_args.num_generation_samples], rows
    if trainer.is_world_process_zero():
        print(f"\nSFT policy saved to {training_args.output_dir}")
        if "eval_loss" in metrics:
            print(f"final eval loss: {metrics['eval_loss']:.4f}")
        for sample in samples:
            print(
                f"generated {sample['generated_length']:4d} tokens (reference {sample['reference_length']:4d}) "
                f"for: {sample['text']}"
            )
        print(usability_line(check, script_args.usable_max_cer, len(samples_rows) if check else 0))
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset=script_args.dataset_name)
    return {"metrics": metrics, "samples": samples, "check": check, "trainer": trainer}


def make_parser() -> ScriptParser:
    return ScriptParser((SFTScriptArguments, TrainingArguments, ModelConfig), toy_config=TOY_RECIPE)


if __name__ == "__main__":
    run_script(make_parser().parse_args_and_config, main)
