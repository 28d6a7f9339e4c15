import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import ClassLabel

from rrpo_hf.data.prompts import instruction_words
from rrpo_hf.data.speech_lm_collator import IGNORE_INDEX, DataCollatorForCosyVoice2
from rrpo_hf.models.cosyvoice2.tokenization import build_tiny_cosyvoice2_tokenizer


REPO = Path(__file__).resolve().parents[1]
PHONEMES = ["ka", "mi", "to", "su"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_cosyvoice2_tokenizer(PHONEMES + instruction_words("en") + ["Speak", "softly"])


def load_sft_script():
    spec = importlib.util.spec_from_file_location("sft_example", REPO / "examples" / "sft.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


# -- collator -----------------------------------------------------------------------------------------------------
def test_collator_builds_instruct_text_padding_and_labels(tokenizer):
    collator = DataCollatorForCosyVoice2(tokenizer, speech_token_size=16)
    rows = [
        {"text": "ka mi", "speech_tokens": [1, 2, 3], "emotion": 2},  # ClassLabel id -> CANONICAL_EMOTIONS[2] = angry
        {"text": "to", "speech_tokens": [4], "emotion": "Surprise"},  # corpus alias
        {"text": "su ka", "speech_tokens": [5, 6], "instruction": "Speak softly"},
    ]
    batch = collator(rows)
    expected_texts = [
        "Your emotion is angry<|endofprompt|>ka mi",
        "Your emotion is surprised<|endofprompt|>to",
        "Speak softly<|endofprompt|>su ka",
    ]
    for i, text in enumerate(expected_texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert batch["text_ids"][i, : len(ids)].tolist() == ids
        assert batch["text_attention_mask"][i].sum() == len(ids)
        assert (batch["text_ids"][i, len(ids) :] == tokenizer.pad_token_id).all()
    assert batch["speech_ids"].tolist() == [[1, 2, 3], [4, 0, 0], [5, 6, 0]]
    assert batch["speech_attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    pad = IGNORE_INDEX
    assert batch["labels"].tolist() == [[1, 2, 3, 16], [4, 16, pad, pad], [5, 6, 16, pad]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_collator_uses_dataset_class_names_and_plain_text_mode(tokenizer):
    names = ClassLabel(names=["sad", "happy"])
    batch = DataCollatorForCosyVoice2(tokenizer, speech_token_size=16, emotion_names=names)(
        [{"text": "ka", "speech_tokens": [1], "emotion": 0}]
    )
    expected = tokenizer("Your emotion is sad<|endofprompt|>ka", add_special_tokens=False)["input_ids"]
    assert batch["text_ids"][0].tolist() == expected

    plain = DataCollatorForCosyVoice2(tokenizer, use_instruction=False, speech_token_size=16, max_text_length=1)
    batch = plain([{"text": "ka mi", "speech_tokens": [1, 2]}])
    assert batch["text_ids"].tolist() == [tokenizer.convert_tokens_to_ids(["ka"])]


def test_collator_output_trains_cosyvoice2lm(tokenizer):
    from rrpo_hf.models.cosyvoice2 import CosyVoice2LM, CosyVoice2LMConfig

    torch.manual_seed(0)
    config = CosyVoice2LMConfig(
        llm_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
        ),
        speech_token_size=16,
    )
    model = CosyVoice2LM(config)
    batch = DataCollatorForCosyVoice2(tokenizer, speech_token_size=16)(
        [
            {"text": "ka mi", "speech_tokens": [1, 2, 3], "emotion": 1},
            {"text": "to", "speech_tokens": [4], "emotion": 3},
        ]
    )
    output = model(**batch)
    assert output.logits.shape == (2, 4, 19)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert model.llm_decoder.weight.grad.abs().sum() > 0


def test_collator_rejects_bad_rows(tokenizer):
    collator = DataCollatorForCosyVoice2(tokenizer, speech_token_size=16)
    with pytest.raises(KeyError, match="speech_tokens"):
        collator([{"text": "ka", "emotion": 0}])
    with pytest.raises(KeyError, match="'text'"):
        collator([{"speech_tokens": [1], "emotion": 0}])
    with pytest.raises(KeyError, match="neither 'instruction' nor 'emotion'"):
        collator([{"text": "ka", "speech_tokens": [1]}])
    with pytest.raises(ValueError, match="empty 'speech_tokens'"):
        collator([{"text": "ka", "speech_tokens": [], "emotion": 0}])
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        collator([{"text": "ka", "speech_tokens": [1, 16], "emotion": 0}])
    with pytest.raises(ValueError, match="emotion id 9"):
        collator([{"text": "ka", "speech_tokens": [1], "emotion": 9}])
    with pytest.raises(ValueError, match="non-empty string"):
        collator([{"text": " ", "speech_tokens": [1], "emotion": 0}])
    with pytest.raises(ValueError, match="empty batch"):
        collator([])


# -- examples/sft.py ----------------------------------------------------------------------------------------------
def test_sft_script_reduces_loss_and_saves_policy(tmp_path):
    sft = load_sft_script()
    args = [
        "--output_dir",
        str(tmp_path / "policy"),
        "--testbed_num_train",
        "64",
        "--testbed_num_test",
        "16",
        "--tiny_hidden_size",
        "32",
        "--tiny_num_hidden_layers",
        "1",
        "--tiny_intermediate_size",
        "64",
        "--max_steps",
        "12",
        "--per_device_train_batch_size",
        "16",
        "--logging_steps",
        "1",
        "--num_generation_samples",
        "2",
        "--export_cosyvoice",
        "true",
    ]
    script_args, training_args, model_args = sft.make_parser().parse_args_and_config(args)
    result = sft.main(script_args, training_args, model_args)

    losses = [entry["loss"] for entry in result["trainer"].state.log_history if "loss" in entry]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2
    assert result["metrics"]["eval_loss"] < losses[0]

    output_dir = tmp_path / "policy"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "llm.pt"):
        assert (output_dir / name).is_file(), name
    from transformers import AutoTokenizer

    from rrpo_hf.models.cosyvoice2 import CosyVoice2LM

    reloaded = CosyVoice2LM.from_pretrained(output_dir)
    trained = result["trainer"].model
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value)
    assert reloaded.config.speech_token_size == 512
    assert len(AutoTokenizer.from_pretrained(output_dir)) == reloaded.config.llm_config.vocab_size

    assert len(result["samples"]) == 2
    for sample in result["samples"]:
        n_text = len(sample["text"].split())  # the instruction does not count (prompt_end_token_id)
        assert 2 * n_text <= sample["generated_length"] <= 20 * n_text


def test_sft_script_lora_saves_merged_policy(tmp_path):
    sft = load_sft_script()
    args = [
        "--output_dir",
        str(tmp_path / "lora"),
        "--testbed_num_train",
        "32",
        "--testbed_num_test",
        "8",
        "--tiny_hidden_size",
        "32",
        "--tiny_num_hidden_layers",
        "1",
        "--tiny_intermediate_size",
        "64",
        "--max_steps",
        "2",
        "--use_peft",
        "true",
        "--lora_r",
        "4",
        "--lora_modules_to_save",
        "llm_decoder",
        "--num_generation_samples",
        "1",
    ]
    script_args, training_args, model_args = sft.make_parser().parse_args_and_config(args)
    result = sft.main(script_args, training_args, model_args)
    peft_model = result["trainer"].model
    from rrpo_hf.models.cosyvoice2 import DEFAULT_LORA_TARGETS, CosyVoice2LM

    assert peft_model.peft_config["default"].target_modules == set(DEFAULT_LORA_TARGETS)

    merged = CosyVoice2LM.from_pretrained(tmp_path / "lora")  # a plain model, no adapter files
    assert not (tmp_path / "lora" / "adapter_config.json").exists()
    batch = {k: v[:1] for k, v in result["trainer"].data_collator([result["trainer"].eval_dataset[0]]).items()}
    peft_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, peft_model(**batch).logits, atol=1e-5, rtol=1e-5)


def test_sft_script_rejects_dataset_without_required_columns(tmp_path):
    from datasets import Dataset

    sft = load_sft_script()
    Dataset.from_dict({"text": ["ka"], "speech": [[1]]}).save_to_disk(tmp_path / "bad")
    script_args, training_args, model_args = sft.make_parser().parse_args_and_config(
        ["--dataset_name", str(tmp_path / "bad"), "--output_dir", str(tmp_path / "out")]
    )
    with pytest.raises(ValueError, match="speech_tokens"):
        sft.main(script_args, training_args, model_args)


@pytest.mark.slow
def test_accelerate_launch_sft_smoke(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--cpu",
        str(REPO / "examples" / "sft.py"),
        "--config",
        str(REPO / "recipes" / "toy" / "sft.yaml"),
        "--output_dir",
        str(tmp_path / "sft_policy"),
        "--testbed_num_train",
        "64",
        "--testbed_num_test",
        "16",
        "--max_steps",
        "4",
        "--num_generation_samples",
        "2",
    ]
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "final eval loss:" in completed.stdout
    assert completed.stdout.count("generated ") == 2
    assert (tmp_path / "sft_policy" / "model.safetensors").is_file()
    assert (tmp_path / "sft_policy" / "tokenizer.json").is_file()
    metrics = json.loads((tmp_path / "sft_policy" / "eval_results.json").read_text())
    assert metrics["eval_loss"] > 0
