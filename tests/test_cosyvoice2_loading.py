"""Loading a policy + tokenizer from a CosyVoice2 release or a save_pretrained folder; LoRA config from ModelConfig."""

import pytest
import torch
from trl import ModelConfig

from rrpo_hf.models.cosyvoice2 import (
    DEFAULT_LORA_TARGETS,
    CosyVoice2LM,
    build_tiny_cosyvoice2_tokenizer,
    is_cosyvoice_release,
    load_cosyvoice2_lm_and_tokenizer,
    lora_config_from_model_args,
    tiny_cosyvoice2_config,
)


@pytest.fixture
def policy_and_tokenizer():
    torch.manual_seed(0)
    tokenizer = build_tiny_cosyvoice2_tokenizer(["ka", "mi", "to", "Your", "emotion", "is", "angry"])
    config = tiny_cosyvoice2_config(tokenizer, speech_token_size=32, hidden_size=16, num_hidden_layers=1)
    return CosyVoice2LM(config).eval(), tokenizer


def assert_same_weights(a, b):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_a[key].float(), state_b[key].float(), rtol=0, atol=0, msg=key)


def test_release_dir_and_its_llm_pt_load_with_the_blank_en_tokenizer(tmp_path, policy_and_tokenizer):
    model, tokenizer = policy_and_tokenizer
    release = tmp_path / "release"
    model.save_cosyvoice(release)  # llm.pt + CosyVoice-BlankEN/config.json
    tokenizer.save_pretrained(release / "CosyVoice-BlankEN")
    assert is_cosyvoice_release(release) and is_cosyvoice_release(release / "llm.pt")
    for path in (release, release / "llm.pt"):
        loaded, loaded_tokenizer = load_cosyvoice2_lm_and_tokenizer(path)
        assert_same_weights(loaded, model)
        assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    bf16, _ = load_cosyvoice2_lm_and_tokenizer(release, dtype="bfloat16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}


def test_a_save_pretrained_folder_with_an_exported_llm_pt_loads_as_the_folder(tmp_path, policy_and_tokenizer):
    model, tokenizer = policy_and_tokenizer
    folder = tmp_path / "policy"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model.save_cosyvoice(folder / "llm.pt", write_llm_config=False)
    assert not is_cosyvoice_release(folder)
    loaded, loaded_tokenizer = load_cosyvoice2_lm_and_tokenizer(folder)
    assert_same_weights(loaded, model)
    assert len(loaded_tokenizer) == len(tokenizer)


def test_a_tokenizer_larger_than_the_text_embedding_is_refused(tmp_path, policy_and_tokenizer):
    model, _ = policy_and_tokenizer
    model.save_pretrained(tmp_path / "policy")
    bigger = build_tiny_cosyvoice2_tokenizer([f"w{i}" for i in range(40)])
    bigger.save_pretrained(tmp_path / "tokenizer")
    with pytest.raises(ValueError, match="do not belong together"):
        load_cosyvoice2_lm_and_tokenizer(tmp_path / "policy", tmp_path / "tokenizer")


def test_lora_config_targets_the_backbone_projections_without_a_task_type():
    config = lora_config_from_model_args(ModelConfig(use_peft=True, lora_r=4, lora_alpha=8))
    assert sorted(config.target_modules) == sorted(DEFAULT_LORA_TARGETS)
    assert (config.r, config.lora_alpha, config.task_type) == (4, 8, None)
    single = lora_config_from_model_args(ModelConfig(use_peft=True, lora_target_modules="q_proj"))
    assert single.target_modules == {"q_proj"}
