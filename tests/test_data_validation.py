"""Bad rows fail before the first optimisation step, and every message names the dataset row and the fix."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Sequence, Value

from rrpo_hf.data.collators import DataCollatorForSpeechEmotion
from rrpo_hf.data.labels import CANONICAL_EMOTIONS
from rrpo_hf.data.prompts import instruction_words
from rrpo_hf.data.speech_lm_collator import DataCollatorForCosyVoice2
from rrpo_hf.data.validation import (
    ROW_INDEX_COLUMN,
    check_speech_lm_dataset,
    check_token_range,
    check_token_range_in_column,
)
from rrpo_hf.models.cosyvoice2.tokenization import build_tiny_cosyvoice2_tokenizer


REPO = Path(__file__).resolve().parents[1]
WORDS = ["ka", "mi", "to", "su"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_cosyvoice2_tokenizer(WORDS + instruction_words("en"))


def good_rows(num=10):
    return {
        "text": [f"{WORDS[i % 4]} {WORDS[(i + 1) % 4]}" for i in range(num)],
        "speech_tokens": [[1 + i % 7, 2, 3] for i in range(num)],
        "emotion": [CANONICAL_EMOTIONS[i % len(CANONICAL_EMOTIONS)] for i in range(num)],
    }


def bad_dataset() -> Dataset:
    rows = good_rows()
    rows["text"][3] = ""  # empty text
    rows["emotion"][5] = "bored"  # no canonical emotion
    rows["speech_tokens"][6] = [1, 99999]  # outside the codebook
    rows["speech_tokens"][8] = []  # no speech
    return Dataset.from_dict(rows)


def test_check_lists_every_bad_row_by_its_dataset_index(tokenizer):
    collator = DataCollatorForCosyVoice2(tokenizer, speech_token_size=16)
    with pytest.raises(ValueError) as raised:
        check_speech_lm_dataset(bad_dataset(), collator, split="train")
    message = str(raised.value)
    assert "4 of 10 row(s)" in message
    assert "Dataset row 3: 'text' must be a non-empty string" in message and "Drop the row" in message
    assert "Dataset row 5:" in message and "Unknown emotion label 'bored'" in message and "extra_aliases" in message
    assert "Dataset row 6: speech token ids must lie in [0, 16), found range [1, 99999]" in message
    assert "Dataset row 8 has empty 'speech_tokens'; drop it" in message
    assert "nothing was trained" in message


def test_check_passes_a_good_dataset_and_indexes_its_rows(tokenizer):
    collator = DataCollatorForCosyVoice2(tokenizer, speech_token_size=16)
    checked = check_speech_lm_dataset(Dataset.from_dict(good_rows()), collator)
    assert checked[ROW_INDEX_COLUMN] == list(range(10))
    assert check_speech_lm_dataset(None, collator) is None
    # The collator still builds the same batch: the index column is only read for messages.
    plain = collator([{k: v for k, v in checked[i].items() if k != ROW_INDEX_COLUMN} for i in range(3)])
    indexed = collator([checked[i] for i in range(3)])
    assert all(torch.equal(plain[key], indexed[key]) for key in plain)


def test_check_finds_bad_zero_shot_prompt_columns_before_training(tokenizer):
    rows = good_rows()
    rows["prompt_text"] = ["ka mi"] * 10
    rows["prompt_speech_tokens"] = [[4, 5]] * 10
    rows["prompt_speech_tokens"][2] = []  # a transcript without its speech
    rows["prompt_speech_tokens"][7] = [4, 500]  # outside the codebook
    collator = DataCollatorForCosyVoice2(tokenizer, speech_token_size=16)
    with pytest.raises(ValueError) as raised:
        check_speech_lm_dataset(Dataset.from_dict(rows), collator)
    message = str(raised.value)
    assert "2 of 10 row(s)" in message
    assert "Dataset row 2" in message and "'prompt_text'" in message and "'prompt_speech_tokens'" in message
    assert "Dataset row 7: 'prompt_speech_tokens' ids must lie in [0, 16)" in message
    rows["prompt_speech_tokens"][2] = rows["prompt_speech_tokens"][7] = [4, 5]
    assert len(check_speech_lm_dataset(Dataset.from_dict(rows), collator)) == 10


def test_check_reads_class_label_ids_with_the_collators_names(tokenizer):
    rows = good_rows(4)
    features = Features(
        {
            "text": Value("string"),
            "speech_tokens": Sequence(Value("int32")),
            "emotion": ClassLabel(names=["sad", "happy"]),
        }
    )
    dataset = Dataset.from_dict({**rows, "emotion": [0, 1, 0, 1]}, features=features)
    collator = DataCollatorForCosyVoice2(tokenizer, speech_token_size=16, emotion_names=features["emotion"])
    check_speech_lm_dataset(dataset, collator)  # every id has a name
    narrower = DataCollatorForCosyVoice2(tokenizer, speech_token_size=16, emotion_names=["sad"])
    with pytest.raises(ValueError, match=r"Dataset row 1: emotion id 1 is outside the 1 known names"):
        check_speech_lm_dataset(dataset, narrower)


def test_collator_messages_name_the_dataset_row_after_shuffling(tokenizer):
    collator = DataCollatorForCosyVoice2(tokenizer, speech_token_size=16)
    rows = good_rows()
    rows["speech_tokens"][7] = [1, 16]
    dataset = Dataset.from_dict(rows).add_column(ROW_INDEX_COLUMN, list(range(10))).shuffle(seed=0)
    position = dataset[ROW_INDEX_COLUMN].index(7)
    assert position != 7  # the batch position differs from the dataset row
    with pytest.raises(ValueError, match=r"^Dataset row 7: speech token ids"):
        collator([dataset[i] for i in range(10)])
    # Without the index column the message says what the number is: a position in the batch.
    with pytest.raises(ValueError, match=rf"^Sample {position} of the batch: speech token ids"):
        collator([{k: v for k, v in dataset[i].items() if k != ROW_INDEX_COLUMN} for i in range(10)])


def test_reward_collator_names_the_dataset_row():
    collator = DataCollatorForSpeechEmotion(pad_token_id=8, vocab_size=8, label2id={"happy": 0, "sad": 1})
    rows = [
        {"speech_tokens": [1, 2], "emotion": 0, ROW_INDEX_COLUMN: 41},
        {"speech_tokens": [1], "emotion": "bored", ROW_INDEX_COLUMN: 42},
    ]
    with pytest.raises(ValueError, match=r"^Dataset row 42: Unknown emotion label 'bored'"):
        collator(rows)
    rows[1] = {"speech_tokens": [1, 9], "emotion": 1}
    with pytest.raises(ValueError, match=r"^Sample 1 of the batch: speech token ids .*token id 9 out of the codebook"):
        collator(rows)


def test_token_range_message_names_the_row_the_bad_id_and_the_fix():
    check_token_range([0, 5, 7], 8, "Sample 0 of the batch")  # every id in the codebook
    with pytest.raises(ValueError) as raised:
        check_token_range([3, -2, 9], 8, "Dataset row 4", column="prompt_speech_tokens")
    message = str(raised.value)
    assert message.startswith("Dataset row 4: 'prompt_speech_tokens' ids must lie in [0, 8), found range [-2, 9]")
    assert "token id -2 out of the codebook [0, 8) at position 1" in message
    assert "speech tokenizer" in message and "stop ids stripped" in message


def test_token_range_over_a_column_names_the_dataset_row():
    dataset = Dataset.from_dict({"speech_tokens": [[1, 2], [3], [4, 20, 5], [30]]})
    column = dataset.with_format("arrow")[:]["speech_tokens"]
    check_token_range_in_column(column, 64, "train", "speech_tokens")
    with pytest.raises(ValueError, match=r"^Dataset row 12 of the eval dataset: 'speech_tokens' ids .*token id 20 "):
        check_token_range_in_column(column, 16, "eval", "speech_tokens", offset=10)


def load_sft_script():
    spec = importlib.util.spec_from_file_location("sft_example_validation", REPO / "examples" / "sft.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_sft_script_rejects_bad_rows_before_the_first_step(tmp_path):
    """The issue's run: an unknown label in a late batch with --max_steps 4 trained and saved without noticing."""
    from rrpo_hf.models.cosyvoice2 import CosyVoice2LM, tiny_cosyvoice2_config
    from rrpo_hf.testbed import build_testbed_tokenizer, make_emotion_corpus

    corpus = make_emotion_corpus(num_train=32, num_test=4, seed=0)
    names = corpus["train"].features["emotion"].names
    emotions = [names[label] for label in corpus["train"]["emotion"]]
    emotions[29] = "bored"  # the unknown label sits in the last batches of an 8-step epoch
    train = corpus["train"].remove_columns("emotion").add_column("emotion", emotions)
    train.save_to_disk(tmp_path / "data")
    tokenizer = build_testbed_tokenizer()
    policy = CosyVoice2LM(
        tiny_cosyvoice2_config(tokenizer, 512, hidden_size=16, num_hidden_layers=1, intermediate_size=32)
    )
    policy.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    sft = load_sft_script()
    script_args, training_args, model_args = sft.make_parser().parse_args_and_config(
        [
            "--model_name_or_path",
            str(tmp_path / "policy"),
            "--dataset_name",
            str(tmp_path / "data"),
            "--output_dir",
            str(tmp_path / "out"),
            "--max_steps",
            "4",
            "--per_device_train_batch_size",
            "2",
            "--use_cpu",
            "true",
            "--report_to",
            "none",
        ]
    )
    with pytest.raises(ValueError, match=r"(?s)1 of 32 row.*Dataset row 29:.*'bored'"):
        sft.main(script_args, training_args, model_args)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_reward_trainer_rejects_max_length_beyond_the_positions(tmp_path):
    from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
    from rrpo_hf.trainers import RobustRewardConfig, RobustRewardTrainer

    model = RobustSERForAudioClassification(
        RobustSERConfig(
            vocab_size=8,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        )
    )
    args = RobustRewardConfig(output_dir=str(tmp_path / "rm"), max_length=1000, use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match=r"max_length=1000 exceeds .*max_position_embeddings=32.*--max_length 32"):
        RobustRewardTrainer(model=model, args=args)
