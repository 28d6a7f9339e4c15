"""The builders the example scripts and the study share build what the hand-written set-up they replace built."""

import pytest
import torch
from datasets import ClassLabel, Dataset
from transformers import Trainer, TrainingArguments

from rrpo_hf import (
    CANONICAL_EMOTIONS,
    CosyVoice2LM,
    CosyVoice2SFTTrainer,
    RobustSERConfig,
    build_cosyvoice2_sft_collator,
    build_robust_ser_config,
    build_tiny_cosyvoice2_policy,
    tiny_cosyvoice2_config,
)
from rrpo_hf.testbed import build_testbed_tokenizer
from rrpo_hf.trainers.saving import MergedSaveMixin


CODEBOOK = 32


@pytest.fixture(scope="module")
def tokenizer():
    return build_testbed_tokenizer()


def test_tiny_policy_is_the_seeded_tiny_config_model(tokenizer):
    torch.manual_seed(0)
    built = build_tiny_cosyvoice2_policy(tokenizer, CODEBOOK, hidden_size=32, num_hidden_layers=1)
    torch.manual_seed(0)
    reference = CosyVoice2LM(tiny_cosyvoice2_config(tokenizer, CODEBOOK, hidden_size=32, num_hidden_layers=1))
    assert built.config.to_dict() == reference.config.to_dict()
    reference_state = reference.state_dict()
    for name, tensor in built.state_dict().items():
        assert torch.equal(tensor, reference_state[name]), name


def test_tiny_policy_attention_implementation(tokenizer):
    model = build_tiny_cosyvoice2_policy(
        tokenizer, CODEBOOK, attn_implementation="eager", hidden_size=32, num_hidden_layers=1
    )
    assert model.config.llm_config._attn_implementation == "eager"


def test_sft_collator_follows_the_model_config(tokenizer):
    config = tiny_cosyvoice2_config(tokenizer, CODEBOOK, hidden_size=32, num_hidden_layers=1)
    config.bistream_text_chunk, config.bistream_speech_chunk = 3, 9
    names = ClassLabel(names=["sad", "happy"])
    collator = build_cosyvoice2_sft_collator(tokenizer, config, names, use_instruction=False, seed=7)
    assert collator.speech_token_size == CODEBOOK
    assert (collator.bistream_text_chunk, collator.bistream_speech_chunk) == (3, 9)
    assert collator._emotion_names == ["sad", "happy"]
    assert collator.use_instruction is False and collator.seed == 7
    # A feature that is not a ClassLabel (string emotions, or no column) leaves the canonical id order.
    for feature in (None, Dataset.from_dict({"emotion": ["sad"]}).features["emotion"]):
        assert build_cosyvoice2_sft_collator(tokenizer, config, feature)._emotion_names == list(CANONICAL_EMOTIONS)


def test_robust_ser_config_from_sizes_and_label_names():
    config = build_robust_ser_config(CODEBOOK, ["sad", "happy", "angry"], hidden_size=16, num_hidden_layers=1)
    assert isinstance(config, RobustSERConfig)
    assert config.id2label == {0: "sad", 1: "happy", 2: "angry"}
    assert config.label2id == {"sad": 0, "happy": 1, "angry": 2}
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (CODEBOOK, 16, 1)
    assert (config.num_attention_heads, config.intermediate_size, config.max_position_embeddings) == (4, 32, 512)
    config = build_robust_ser_config(CODEBOOK, CANONICAL_EMOTIONS, intermediate_size=24, pooling="mean")
    assert (config.intermediate_size, config.pooling) == (24, "mean")
    with pytest.raises(ValueError, match="Duplicate"):
        build_robust_ser_config(CODEBOOK, ["sad", "sad"])


def test_sft_trainer_saves_like_the_other_policy_trainers(tokenizer, tmp_path):
    assert issubclass(CosyVoice2SFTTrainer, MergedSaveMixin) and issubclass(CosyVoice2SFTTrainer, Trainer)
    model = build_tiny_cosyvoice2_policy(tokenizer, CODEBOOK, hidden_size=32, num_hidden_layers=1)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = CosyVoice2SFTTrainer(model=model, args=args, save_merged=False)
    assert trainer.save_merged is False
    assert trainer.saved_format == "full"  # no LoRA adapter: a plain model is saved
    assert CosyVoice2SFTTrainer(model=model, args=args).save_merged is True
