"""CosyVoice3's llm.pt: import -> export bit-exact in upstream's key layout and shapes, strict load, version detection.

Upstream's ``CosyVoice3LM`` (FunAudioLLM/CosyVoice ``cosyvoice/llm/llm.py`` at ace7c47) builds, in this order,
``llm`` (a ``Qwen2Encoder`` holding ``model`` = ``Qwen2ForCausalLM``), ``llm_decoder`` = Linear(896, 6561 + 200,
bias=False) and ``speech_embedding`` = Embedding(6561 + 200, 896), and no ``llm_embedding``. The key list below is
written out from that, independently of the library.
"""

import json
import os

import pytest
import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from rrpo_hf import CosyVoice2LM, CosyVoice3LM, CosyVoice3LMConfig
from rrpo_hf.models.cosyvoice2.checkpoint import CosyVoiceCheckpointError, load_cosyvoice_checkpoint
from rrpo_hf.models.cosyvoice3 import COSYVOICE3_0_5B_BACKBONE


REAL_SPEECH_VOCAB = 6561 + 200


class UpstreamCosyVoice3Modules(nn.Module):
    """The module tree of upstream's ``CosyVoice3LM`` (no sampling or forward: the key layout only)."""

    def __init__(self, llm_config: Qwen2Config, speech_token_size: int):
        super().__init__()
        self.llm = nn.Module()
        self.llm.model = Qwen2ForCausalLM(llm_config)
        self.llm_decoder = nn.Linear(llm_config.hidden_size, speech_token_size + 200, bias=False)
        self.speech_embedding = nn.Embedding(speech_token_size + 200, llm_config.hidden_size)


def upstream_key_shapes(hidden, layers, vocab, heads, kv_heads, mlp, speech_vocab) -> dict:
    kv = kv_heads * hidden // heads
    keys = {"llm.model.model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"llm.model.model.layers.{i}."
        keys.update(
            {
                p + "self_attn.q_proj.weight": (hidden, hidden),
                p + "self_attn.q_proj.bias": (hidden,),
                p + "self_attn.k_proj.weight": (kv, hidden),
                p + "self_attn.k_proj.bias": (kv,),
                p + "self_attn.v_proj.weight": (kv, hidden),
                p + "self_attn.v_proj.bias": (kv,),
                p + "self_attn.o_proj.weight": (hidden, hidden),
                p + "mlp.gate_proj.weight": (mlp, hidden),
                p + "mlp.up_proj.weight": (mlp, hidden),
                p + "mlp.down_proj.weight": (hidden, mlp),
                p + "input_layernorm.weight": (hidden,),
                p + "post_attention_layernorm.weight": (hidden,),
            }
        )
    keys.update(
        {
            "llm.model.model.norm.weight": (hidden,),
            "llm.model.lm_head.weight": (vocab, hidden),
            "llm_decoder.weight": (speech_vocab, hidden),
            "speech_embedding.weight": (speech_vocab, hidden),
        }
    )
    return keys


def real_width_backbone(num_hidden_layers: int) -> dict:
    """The released 0.5B backbone (hidden 896, vocab 151936, 14 / 2 heads, MLP 4864) with fewer layers."""
    backbone = dict(COSYVOICE3_0_5B_BACKBONE, num_hidden_layers=num_hidden_layers)
    rope = backbone.pop("rope_parameters")
    return dict(backbone, rope_theta=rope["rope_theta"])  # as the release's flat BlankEN config.json has it


def write_upstream_release(root, num_hidden_layers: int, dtype=torch.bfloat16, seed=0) -> str:
    """A Fun-CosyVoice3-0.5B-like model dir: ``llm.pt`` with random weights in upstream's key order and shapes
    (the text head stored tied to the text embedding, as ``torch.save(state_dict())`` of a tied Qwen2 does)."""
    backbone = real_width_backbone(num_hidden_layers)
    shapes = upstream_key_shapes(896, num_hidden_layers, 151936, 14, 2, 4864, REAL_SPEECH_VOCAB)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key == "llm.model.lm_head.weight":
            state[key] = state["llm.model.model.embed_tokens.weight"]
            continue
        tensor = torch.randn(shape, generator=generator) * 0.02
        if key.endswith("norm.weight"):
            tensor += 1.0
        state[key] = tensor.to(dtype)
    model_dir = os.path.join(root, "Fun-CosyVoice3-0.5B")
    os.makedirs(os.path.join(model_dir, "CosyVoice-BlankEN"))
    with open(os.path.join(model_dir, "CosyVoice-BlankEN", "config.json"), "w") as handle:
        json.dump(dict(backbone, architectures=["Qwen2ForCausalLM"], model_type="qwen2"), handle)
    torch.save(state, os.path.join(model_dir, "llm.pt"))
    return model_dir


def test_default_config_is_the_released_0_5b_layout_in_upstream_key_order():
    from rrpo_hf.models.cosyvoice2.checkpoint import expected_cosyvoice_shapes, hf_key_to_cosyvoice

    config = CosyVoice3LMConfig()
    shapes = expected_cosyvoice_shapes(config)
    expected = upstream_key_shapes(896, 24, 151936, 14, 2, 4864, REAL_SPEECH_VOCAB)
    assert list(shapes.items()) == list(expected.items())  # same keys, shapes and order
    assert "llm_embedding.weight" not in shapes and "llm_decoder.bias" not in shapes
    assert len(shapes) == 1 + 24 * 12 + 4
    with torch.device("meta"):  # the full 0.5B model, shapes only
        model = CosyVoice3LM(config)
        upstream = UpstreamCosyVoice3Modules(Qwen2Config(**real_width_backbone(24)), 6561)
    model_shapes = {hf_key_to_cosyvoice(k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert model_shapes == {k: v for k, v in expected.items() if k != "llm.model.lm_head.weight"}
    assert {k: tuple(v.shape) for k, v in upstream.state_dict().items()} == expected


@pytest.mark.slow
def test_real_width_llm_pt_round_trip_is_bit_exact_and_loads_strictly_upstream(tmp_path):
    # Every tensor at its released width (hidden 896, 151936 text rows, 6761 speech rows, 14 / 2 heads, MLP 4864),
    # one of the 24 layers (the 24-layer key list is checked on the meta device above), bf16 to keep the file small.
    model_dir = write_upstream_release(str(tmp_path), num_hidden_layers=1)
    original = torch.load(os.path.join(model_dir, "llm.pt"), weights_only=True)

    model = CosyVoice3LM.from_cosyvoice(model_dir)
    assert type(model) is CosyVoice3LM and model.config.cosyvoice_version == 3
    assert model.config.speech_token_size == 6561 and model.config.num_special_speech_tokens == 200
    assert model.llm_decoder.bias is None and not hasattr(model, "llm_embedding")
    assert model.dtype == torch.bfloat16

    exported_path = model.save_cosyvoice(str(tmp_path / "export"), dtype=None)
    exported = torch.load(exported_path, weights_only=True)
    assert list(exported) == list(original)
    for key in original:
        assert exported[key].dtype == original[key].dtype, key
        assert torch.equal(exported[key], original[key]), key

    with torch.device("meta"):
        upstream = UpstreamCosyVoice3Modules(Qwen2Config(**real_width_backbone(1)), 6561)
    result = upstream.load_state_dict(exported, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_float32_export_and_save_pretrained_round_trip(tmp_path):
    from rrpo_hf import build_tiny_cosyvoice3_tokenizer, tiny_cosyvoice3_config

    tokenizer = build_tiny_cosyvoice3_tokenizer(["ka", "mi"])
    torch.manual_seed(0)
    model = CosyVoice3LM(tiny_cosyvoice3_config(tokenizer, 24, hidden_size=32, num_attention_heads=4))
    path = model.save_cosyvoice(str(tmp_path / "release"))
    state = torch.load(path, weights_only=True)
    assert list(state)[-2:] == ["llm_decoder.weight", "speech_embedding.weight"]
    assert state["speech_embedding.weight"].shape == (224, 32)
    reloaded = CosyVoice3LM.from_cosyvoice(str(tmp_path / "release"))
    assert reloaded.config.end_of_prompt_id == 151646  # from_cosyvoice takes upstream's default ...
    reloaded = CosyVoice3LM.from_cosyvoice(str(tmp_path / "release"), end_of_prompt_id=model.config.end_of_prompt_id)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    # The file's keys say CosyVoice3: the generic loader builds that class, the CosyVoice2 entry point refuses it.
    assert type(load_cosyvoice_checkpoint(str(tmp_path / "release"))) is CosyVoice3LM
    with pytest.raises(CosyVoiceCheckpointError, match="is a CosyVoice3 LM.*use CosyVoice3LM.from_cosyvoice"):
        CosyVoice2LM.from_cosyvoice(str(tmp_path / "release"))

    model.save_pretrained(tmp_path / "hf")
    from transformers import AutoConfig, AutoModel

    assert AutoConfig.from_pretrained(tmp_path / "hf").model_type == "cosyvoice3_lm"
    auto = AutoModel.from_pretrained(tmp_path / "hf")
    assert type(auto) is CosyVoice3LM
    assert auto.config.sos_id == 24 and auto.config.task_id == 26
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), auto.state_dict().values()))


def test_a_cosyvoice2_file_is_refused_by_cosyvoice3_with_both_names(tmp_path):
    from test_cosyvoice2_checkpoint import write_fake_release

    model_dir, _ = write_fake_release(str(tmp_path))
    with pytest.raises(CosyVoiceCheckpointError, match="is a CosyVoice2 LM.*CosyVoice3LM loads CosyVoice3"):
        CosyVoice3LM.from_cosyvoice(model_dir)
    assert type(load_cosyvoice_checkpoint(model_dir)) is CosyVoice2LM


def test_misshaped_cosyvoice3_file_lists_every_problem(tmp_path):
    from rrpo_hf import build_tiny_cosyvoice3_tokenizer, tiny_cosyvoice3_config

    config = tiny_cosyvoice3_config(build_tiny_cosyvoice3_tokenizer(["ka"]), 24, hidden_size=32)
    path = CosyVoice3LM(config).save_cosyvoice(str(tmp_path / "release"))
    state = torch.load(path, weights_only=True)
    state["speech_embedding.weight"] = state["speech_embedding.weight"][:-1]  # 199 special rows
    del state["llm.model.model.layers.0.mlp.up_proj.weight"]
    torch.save(state, path)
    with pytest.raises(CosyVoiceCheckpointError) as excinfo:
        load_cosyvoice_checkpoint(path)
    message = str(excinfo.value)
    assert "CosyVoice3 LM layout" in message and "layers.0.mlp.up_proj.weight" in message
    assert "llm_decoder.weight: (224, 32) != expected (223, 32)" in message


def test_release_dir_loads_a_cosyvoice3_policy_with_cosyvoice3_special_tokens(tmp_path):
    from test_cosyvoice2_tokenizer import write_blank_en

    from rrpo_hf import load_cosyvoice2_lm_and_tokenizer
    from rrpo_hf.data.prompts import build_instruct_text
    from rrpo_hf.models.cosyvoice3 import COSYVOICE3_SPECIAL_TOKENS

    release = tmp_path / "Fun-CosyVoice3-0.5B"
    release.mkdir()
    bpe_size = write_blank_en(release / "CosyVoice-BlankEN")
    config = CosyVoice3LMConfig(
        llm_config=dict(vocab_size=bpe_size + 300, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1),
        speech_token_size=24, end_of_prompt_id=bpe_size + 3,
    )  # fmt: skip
    CosyVoice3LM(config).save_cosyvoice(release)  # llm.pt, and CosyVoice-BlankEN/config.json beside the vocabulary
    policy, tokenizer = load_cosyvoice2_lm_and_tokenizer(release)
    assert type(policy) is CosyVoice3LM
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tokenizer.convert_tokens_to_ids(list(COSYVOICE3_SPECIAL_TOKENS)) == list(range(eos + 1, eos + 281))
    assert len(tokenizer) == bpe_size + 281
    ids = tokenizer(build_instruct_text("hello world", emotion="happy", cosyvoice_version=3))["input_ids"]
    assert ids.count(eos + 3) == 1  # <|endofprompt|>, the id the released model asserts (151646 there)
    assert tokenizer.convert_tokens_to_ids("<|endofsystem|>") == eos + 20
