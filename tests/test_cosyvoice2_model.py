"""CosyVoice2LM: config, packed forward, loss, soft inputs, prompts for generation, KV cache, checkpointing, PEFT."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from rrpo_hf.models.cosyvoice2 import CosyVoice2LM, CosyVoice2LMConfig
from rrpo_hf.models.cosyvoice2.checkpoint import CosyVoiceCheckpointError


SPEECH_TOKEN_SIZE = 512
TEXT_VOCAB = 40


def tiny_config(**overrides) -> CosyVoice2LMConfig:
    llm = dict(
        vocab_size=TEXT_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return CosyVoice2LMConfig(llm_config=llm, speech_token_size=SPEECH_TOKEN_SIZE, **overrides)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return CosyVoice2LM(tiny_config()).eval()


def batch():
    """Right-padded batch of two samples with different text and speech lengths, plus CosyVoice2 labels."""
    text_ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    text_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    speech_ids = torch.tensor([[3, 4, 0, 0, 0], [100, 200, 300, 400, 511]])
    speech_mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    eos = SPEECH_TOKEN_SIZE
    labels = torch.tensor([[3, 4, eos, -100, -100, -100], [100, 200, 300, 400, 511, eos]])
    return dict(
        text_ids=text_ids, text_attention_mask=text_mask, speech_ids=speech_ids, speech_attention_mask=speech_mask
    ), labels


def test_config_ids_and_nested_backbone_round_trip(tmp_path):
    config = tiny_config()
    assert config.speech_vocab_size == 515
    assert config.speech_eos_id == 512
    assert config.stop_token_ids == [512, 513, 514]
    assert config.hidden_size == 32
    default = CosyVoice2LMConfig()
    assert (default.speech_vocab_size, default.speech_eos_id, default.stop_token_ids) == (
        6564,
        6561,
        [6561, 6562, 6563],
    )
    assert (default.hidden_size, default.llm_config.num_hidden_layers, default.llm_config.vocab_size) == (
        896,
        24,
        151936,
    )
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, CosyVoice2LMConfig)
    assert loaded.llm_config.to_dict() == config.llm_config.to_dict()
    with pytest.raises(ValueError, match="sos_id"):
        tiny_config(sos_id=1, task_id=1)
    with pytest.raises(ValueError, match="num_special_speech_tokens"):
        tiny_config(num_special_speech_tokens=0)


def test_model_structure_and_auto_model():
    model = AutoModel.from_config(tiny_config())
    assert isinstance(model, CosyVoice2LM)
    assert model.llm_embedding.weight.shape == (2, 32)
    assert model.speech_embedding.weight.shape == (515, 32)
    assert model.llm_decoder.bias is not None and torch.count_nonzero(model.llm_decoder.bias) == 0
    assert type(model.model).__name__ == "Qwen2Model"
    assert model.config._attn_implementation == "sdpa"
    assert model.get_input_embeddings() is model.model.embed_tokens
    assert not hasattr(model, "lm_head")


def test_forward_logits_mask_and_cosyvoice2_loss(model):
    inputs, labels = batch()
    out = model(**inputs, labels=labels)
    assert out.logits.shape == (2, 6, 515)
    assert out.logits_mask.tolist() == [[True, True, True, False, False, False], [True] * 6]
    valid = labels != -100
    manual = F.cross_entropy(out.logits[valid], labels[valid])  # mean over the 3 + 6 real targets
    torch.testing.assert_close(out.loss, manual)
    out.loss.backward()
    assert model.speech_embedding.weight.grad[511].abs().sum() > 0  # last speech token of sample 2 was an input
    assert model.speech_embedding.weight.grad[510].abs().sum() == 0  # never seen


def test_each_sample_is_independent_of_its_batch(model):
    inputs, _ = batch()
    with torch.no_grad():
        together = model(**inputs).logits
        alone = model(text_ids=torch.tensor([[9, 10]]), speech_ids=torch.tensor([[100, 200, 300, 400, 511]])).logits
        first = model(text_ids=torch.tensor([[5, 6, 7, 8]]), speech_ids=torch.tensor([[3, 4]])).logits
    torch.testing.assert_close(together[1], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together[0, :3], first[0], rtol=1e-5, atol=1e-5)


def test_soft_speech_inputs_match_hard_ids_and_carry_gradients(model):
    inputs, _ = batch()
    speech_ids = inputs.pop("speech_ids")
    with torch.no_grad():
        hard = model(speech_ids=speech_ids, **inputs).logits
    # the codebook part only (V = speech_token_size < speech_vocab_size), as DiffRO's Gumbel samples are
    probs = F.one_hot(speech_ids, SPEECH_TOKEN_SIZE).float().requires_grad_(True)
    soft = model(speech_token_probs=probs, **inputs)
    torch.testing.assert_close(soft.logits, hard, rtol=1e-5, atol=1e-5)
    soft.logits[soft.logits_mask].logsumexp(-1).sum().backward()
    assert probs.grad is not None and probs.grad[1, 4].abs().sum() > 0
    assert probs.grad[0, 2:].abs().sum() == 0  # padded speech does not influence real positions


def test_clear_errors_for_bad_inputs(model):
    inputs, labels = batch()
    bad = dict(inputs, speech_ids=inputs["speech_ids"].clone())
    bad["speech_ids"][1, 0] = 515
    with pytest.raises(ValueError, match=r"speech_ids must lie in \[0, 515\)"):
        model(**bad)
    bad["speech_ids"][1, 0] = -3
    with pytest.raises(ValueError, match="speech_ids"):
        model(**bad)
    with pytest.raises(ValueError, match="text_ids must lie"):
        model(text_ids=torch.tensor([[TEXT_VOCAB]]))
    with pytest.raises(ValueError, match=r"Samples \[1\] have no text tokens"):
        model(text_ids=inputs["text_ids"], text_attention_mask=torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="V <= speech_vocab_size"):
        model(text_ids=inputs["text_ids"], speech_token_probs=torch.rand(2, 5, 516))
    with pytest.raises(ValueError, match="not both"):
        model(**inputs, speech_token_probs=torch.rand(2, 5, 512))
    with pytest.raises(ValueError, match="labels must have shape"):
        model(**inputs, labels=labels[:, :-1])
    wrong = labels.clone()
    wrong[0, 4] = 7
    with pytest.raises(ValueError, match="padded speech position"):
        model(**inputs, labels=wrong)


def test_embed_prompt_is_left_padded_and_kv_cached_decoding_matches_forward(model):
    inputs, _ = batch()
    embeds, mask = model.embed_prompt(inputs["text_ids"], inputs["text_attention_mask"])
    assert embeds.shape == (2, 6, 32)
    assert mask.tolist() == [[1] * 6, [0, 0, 1, 1, 1, 1]]
    torch.testing.assert_close(embeds[1, 2], model.llm_embedding.weight[0])
    torch.testing.assert_close(embeds[:, -1], model.llm_embedding.weight[1].expand(2, -1))
    torch.testing.assert_close(embeds[1, 3:5], model.model.embed_tokens.weight[[9, 10]])
    assert embeds[1, :2].abs().sum() == 0

    with torch.no_grad():
        full = model(**inputs).logits
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True)
        torch.testing.assert_close(model.speech_logits(out.last_hidden_state[:, -1]), full[:, 0], rtol=1e-5, atol=1e-5)
        cache = out.past_key_values
        for step in range(2):  # feed the two speech tokens both samples have, one at a time
            mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], dim=1)
            positions = positions[:, -1:] + 1
            step_embeds = model.speech_embedding(inputs["speech_ids"][:, step : step + 1])
            out = model.model(
                inputs_embeds=step_embeds,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            torch.testing.assert_close(
                model.speech_logits(out.last_hidden_state[:, -1]), full[:, step + 1], rtol=1e-5, atol=1e-5
            )


def test_gradient_checkpointing_gives_the_same_gradients(model):
    inputs, labels = batch()
    model.train()
    model(**inputs, labels=labels).loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.is_gradient_checkpointing and model.model.layers[0].gradient_checkpointing
    model(**inputs, labels=labels).loss.backward()
    assert set(reference) == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, grad in reference.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-5, atol=1e-6)


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_lora_adapter_disable_and_merged_export(model, tmp_path):
    from peft import LoraConfig, get_peft_model

    inputs, labels = batch()
    with torch.no_grad():
        base_logits = model(**inputs).logits
    base_q = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS))
    lora_names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert len(lora_names) == 2 * 7 * 2  # A and B for 7 projections in 2 layers
    # LoRA trains: one SGD step moves only the adapters and changes the logits
    peft_model.train()
    peft_model(**inputs, labels=labels).loss.backward()
    torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=1.0).step()
    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(**inputs).logits
        with peft_model.disable_adapter():
            disabled = peft_model(**inputs).logits
    assert not torch.allclose(adapted, base_logits, atol=1e-4)
    torch.testing.assert_close(disabled, base_logits)

    with pytest.raises(CosyVoiceCheckpointError, match="merge_and_unload"):
        peft_model.save_cosyvoice(str(tmp_path / "unmerged.pt"))

    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    delta = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight) * layer.scaling["default"]
    merged = peft_model.merge_and_unload()
    assert isinstance(merged, CosyVoice2LM)
    exported = torch.load(merged.save_cosyvoice(str(tmp_path / "merged.pt")), weights_only=True)
    assert not any("lora" in key or "base_layer" in key for key in exported)
    assert "llm.model.lm_head.weight" in exported and "llm_decoder.bias" in exported
    torch.testing.assert_close(exported["llm.model.model.layers.0.self_attn.q_proj.weight"], base_q + delta)
    reloaded = CosyVoice2LM.from_cosyvoice(str(tmp_path / "merged.pt"), llm_config=model.config.llm_config)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, adapted, rtol=1e-4, atol=1e-5)


def test_tiny_config_matches_its_tokenizer_so_trainer_alignment_changes_nothing():
    from transformers.trainer_utils import align_special_tokens

    from rrpo_hf.models.cosyvoice2 import build_tiny_cosyvoice2_tokenizer, tiny_cosyvoice2_config

    tokenizer = build_tiny_cosyvoice2_tokenizer(["ka", "mi", "angry"])
    config = tiny_cosyvoice2_config(tokenizer, speech_token_size=32, hidden_size=16, num_hidden_layers=1)
    assert config.llm_config.vocab_size == len(tokenizer)
    assert config.llm_config.eos_token_id == config.llm_config.pad_token_id == tokenizer.eos_token_id
    model = CosyVoice2LM(config)
    before = model.config.to_dict()
    align_special_tokens(model, tokenizer)
    assert model.config.to_dict() == before
