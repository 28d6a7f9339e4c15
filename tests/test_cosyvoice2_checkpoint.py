"""llm.pt import/export of CosyVoice2LM against an independent reference built like CosyVoice's Qwen2LM."""

import json
import os

import pytest
import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from rrpo_hf.models.cosyvoice2 import CosyVoice2LM
from rrpo_hf.models.cosyvoice2.checkpoint import CosyVoiceCheckpointError, load_cosyvoice_checkpoint


SPEECH_TOKEN_SIZE = 24
TINY_QWEN2 = dict(
    vocab_size=48,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    tie_word_embeddings=True,
)


class ReferenceQwen2LM(nn.Module):
    """Module tree of CosyVoice's ``Qwen2LM`` (``llm`` = ``Qwen2Encoder`` holding ``model`` = Qwen2ForCausalLM)."""

    def __init__(self, llm_config: Qwen2Config, speech_token_size: int):
        super().__init__()
        hidden = llm_config.hidden_size
        self.llm_embedding = nn.Embedding(2, hidden)
        self.llm = nn.Module()
        self.llm.model = Qwen2ForCausalLM(llm_config)
        self.llm_decoder = nn.Linear(hidden, speech_token_size + 3)
        self.speech_embedding = nn.Embedding(speech_token_size + 3, hidden)

    def speech_logits_one(self, text_ids: torch.Tensor, speech_ids: torch.Tensor) -> torch.Tensor:
        """Unpadded single sample, laid out as docs/architecture.md says:
        [sos, embed_tokens(text), task_id, speech_embedding(u)]."""
        inputs_embeds = torch.cat(
            [
                self.llm_embedding.weight[0:1],
                self.llm.model.model.embed_tokens(text_ids),
                self.llm_embedding.weight[1:2],
                self.speech_embedding(speech_ids),
            ]
        ).unsqueeze(0)
        out = self.llm.model(inputs_embeds=inputs_embeds, output_hidden_states=True)
        last_hidden = out.hidden_states[-1][0]
        # hidden_states[-1] must be the post-final-norm state that CosyVoice reads; the text head proves it.
        torch.testing.assert_close(self.llm.model.lm_head(last_hidden), out.logits[0])
        return self.llm_decoder(last_hidden[len(text_ids) + 1 :])


def tiny_llm_config() -> Qwen2Config:
    return Qwen2Config(**TINY_QWEN2)


def write_fake_release(root, seed=0) -> tuple[str, ReferenceQwen2LM]:
    """A CosyVoice2 model dir in the released format with tiny random weights."""
    torch.manual_seed(seed)
    reference = ReferenceQwen2LM(tiny_llm_config(), SPEECH_TOKEN_SIZE)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            # non-trivial norms and biases, so a dropped or swapped tensor changes the logits
            if param.dim() == 1:
                param.normal_(1.0 if "norm" in name else 0.0, 0.2)
    model_dir = os.path.join(root, "CosyVoice2-tiny")
    os.makedirs(os.path.join(model_dir, "CosyVoice-BlankEN"))
    tiny_llm_config().to_json_file(os.path.join(model_dir, "CosyVoice-BlankEN", "config.json"))
    torch.save(reference.state_dict(), os.path.join(model_dir, "llm.pt"))
    return model_dir, reference


def released_key_shapes(llm: Qwen2Config, speech_vocab: int) -> dict:
    """The key/shape list of docs/architecture.md, written out independently of the library."""
    d, inter, kv = (
        llm.hidden_size,
        llm.intermediate_size,
        llm.num_key_value_heads * llm.hidden_size // llm.num_attention_heads,
    )
    keys = {"llm_embedding.weight": (2, d), "llm.model.model.embed_tokens.weight": (llm.vocab_size, d)}
    for i in range(llm.num_hidden_layers):
        p = f"llm.model.model.layers.{i}."
        keys.update(
            {
                p + "self_attn.q_proj.weight": (d, d),
                p + "self_attn.q_proj.bias": (d,),
                p + "self_attn.k_proj.weight": (kv, d),
                p + "self_attn.k_proj.bias": (kv,),
                p + "self_attn.v_proj.weight": (kv, d),
                p + "self_attn.v_proj.bias": (kv,),
                p + "self_attn.o_proj.weight": (d, d),
                p + "mlp.gate_proj.weight": (inter, d),
                p + "mlp.up_proj.weight": (inter, d),
                p + "mlp.down_proj.weight": (d, inter),
                p + "input_layernorm.weight": (d,),
                p + "post_attention_layernorm.weight": (d,),
            }
        )
    keys.update(
        {
            "llm.model.model.norm.weight": (d,),
            "llm.model.lm_head.weight": (llm.vocab_size, d),
            "llm_decoder.weight": (speech_vocab, d),
            "llm_decoder.bias": (speech_vocab,),
            "speech_embedding.weight": (speech_vocab, d),
        }
    )
    return keys


@pytest.fixture
def release(tmp_path):
    return write_fake_release(str(tmp_path))


def test_import_reads_blank_en_config_and_infers_speech_vocab(release):
    model_dir, _ = release
    model = CosyVoice2LM.from_cosyvoice(model_dir)
    assert model.config.speech_token_size == SPEECH_TOKEN_SIZE
    assert model.config.stop_token_ids == [SPEECH_TOKEN_SIZE, SPEECH_TOKEN_SIZE + 1, SPEECH_TOKEN_SIZE + 2]
    assert model.config.llm_config.num_key_value_heads == 2
    assert model.config.llm_config.rope_parameters["rope_theta"] == 1000000.0
    assert model.config._attn_implementation == "sdpa"
    # an llm.pt path finds its sibling CosyVoice-BlankEN
    from_file = CosyVoice2LM.from_cosyvoice(os.path.join(model_dir, "llm.pt"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), from_file.state_dict().values()))


def test_llm_pt_round_trip_is_bit_exact_and_keeps_released_key_order(release, tmp_path):
    model_dir, _ = release
    original = torch.load(os.path.join(model_dir, "llm.pt"), weights_only=True)
    model = CosyVoice2LM.from_cosyvoice(model_dir)
    out_path = model.save_cosyvoice(str(tmp_path / "export"))
    exported = torch.load(out_path, weights_only=True)
    assert list(exported) == list(original)
    for key in original:
        assert exported[key].dtype == original[key].dtype
        assert torch.equal(exported[key], original[key]), key
    # the exported directory is itself importable (config written next to it)
    again = CosyVoice2LM.from_cosyvoice(str(tmp_path / "export"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert not [name for name in os.listdir(tmp_path / "export") if name.endswith(".tmp")]


def test_export_keys_match_the_release_spec_and_strict_load_into_reference(release, tmp_path):
    model_dir, _ = release
    model = CosyVoice2LM.from_cosyvoice(model_dir)
    exported = torch.load(model.save_cosyvoice(str(tmp_path / "llm_export.pt")), weights_only=True)
    expected = released_key_shapes(model.config.llm_config, SPEECH_TOKEN_SIZE + 3)
    assert {k: tuple(v.shape) for k, v in exported.items()} == expected
    assert torch.equal(exported["llm.model.lm_head.weight"], exported["llm.model.model.embed_tokens.weight"])
    fresh = ReferenceQwen2LM(tiny_llm_config(), SPEECH_TOKEN_SIZE)
    result = fresh.load_state_dict(exported, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_logits_match_reference_one_sample_at_a_time(release):
    model_dir, reference = release
    model = CosyVoice2LM.from_cosyvoice(model_dir)
    reference.eval()
    generator = torch.Generator().manual_seed(1)
    text_lengths, speech_lengths = [5, 2, 9], [7, 11, 1]
    texts = [torch.randint(0, TINY_QWEN2["vocab_size"], (n,), generator=generator) for n in text_lengths]
    speeches = [torch.randint(0, SPEECH_TOKEN_SIZE, (n,), generator=generator) for n in speech_lengths]
    # padded batch: text LEFT-padded (arbitrary pad ids) to prove padding side does not matter, speech right-padded
    text_ids = torch.full((3, max(text_lengths)), 7)
    text_mask = torch.zeros_like(text_ids)
    speech_ids = torch.full((3, max(speech_lengths)), -1)
    speech_mask = torch.zeros_like(speech_ids)
    for b, (t, s) in enumerate(zip(texts, speeches)):
        text_ids[b, text_ids.shape[1] - len(t) :] = t
        text_mask[b, text_ids.shape[1] - len(t) :] = 1
        speech_ids[b, : len(s)] = s
        speech_mask[b, : len(s)] = 1
    with torch.no_grad():
        out = model(text_ids, text_mask, speech_ids, speech_mask)
        for b, (t, s) in enumerate(zip(texts, speeches)):
            expected = reference.speech_logits_one(t, s)
            assert out.logits_mask[b].sum() == len(s) + 1
            torch.testing.assert_close(out.logits[b, : len(s) + 1], expected, rtol=1e-5, atol=1e-5)


def test_import_reports_every_missing_unused_and_misshaped_key(release, tmp_path):
    model_dir, _ = release
    state = torch.load(os.path.join(model_dir, "llm.pt"), weights_only=True)
    del state["llm_decoder.bias"]
    del state["llm.model.model.layers.1.mlp.up_proj.weight"]
    state["llm.model.model.layers.0.self_attn.o_proj.bias"] = torch.zeros(32)
    state["llm_embedding.weight"] = torch.zeros(3, 32)
    bad = tmp_path / "bad_llm.pt"
    torch.save(state, bad)
    with pytest.raises(CosyVoiceCheckpointError) as excinfo:
        load_cosyvoice_checkpoint(str(bad), llm_config=os.path.join(model_dir, "CosyVoice-BlankEN"))
    message = str(excinfo.value)
    for fragment in (
        "llm_decoder.bias",
        "layers.1.mlp.up_proj.weight",
        "o_proj.bias",
        "llm_embedding.weight: (3, 32)",
    ):
        assert fragment in message


def test_import_errors_for_missing_files(tmp_path, release):
    with pytest.raises(FileNotFoundError, match="llm.pt"):
        CosyVoice2LM.from_cosyvoice(str(tmp_path / "nowhere"))
    model_dir, _ = release
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    os.replace(os.path.join(model_dir, "llm.pt"), lonely / "llm.pt")
    with pytest.raises(FileNotFoundError, match="llm_config"):
        CosyVoice2LM.from_cosyvoice(str(lonely / "llm.pt"))
    model = CosyVoice2LM.from_cosyvoice(str(lonely / "llm.pt"), llm_config=TINY_QWEN2, dtype=torch.bfloat16)
    assert model.llm_decoder.weight.dtype == torch.bfloat16


def test_save_pretrained_round_trip_is_bit_exact(release, tmp_path):
    from transformers import AutoConfig, AutoModel

    model_dir, _ = release
    model = CosyVoice2LM.from_cosyvoice(model_dir)
    model.save_pretrained(tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "cosyvoice2_lm"
    assert AutoConfig.from_pretrained(tmp_path / "hf").speech_token_size == SPEECH_TOKEN_SIZE
    loaded = AutoModel.from_pretrained(tmp_path / "hf")
    assert isinstance(loaded, CosyVoice2LM)
    original, reloaded = model.state_dict(), loaded.state_dict()
    assert list(original) == list(reloaded)
    assert all(torch.equal(original[k], reloaded[k]) for k in original)


def test_default_config_has_the_released_0_5b_layout():
    from rrpo_hf.models.cosyvoice2 import CosyVoice2LMConfig
    from rrpo_hf.models.cosyvoice2.checkpoint import expected_cosyvoice_shapes, hf_key_to_cosyvoice

    config = CosyVoice2LMConfig()
    shapes = expected_cosyvoice_shapes(config)
    assert shapes == released_key_shapes(config.llm_config, 6564)
    assert shapes["llm.model.model.layers.23.self_attn.k_proj.weight"] == (128, 896)
    assert shapes["llm.model.model.layers.0.mlp.down_proj.weight"] == (896, 4864)
    assert len(shapes) == 2 + 24 * 12 + 5
    with torch.device("meta"):  # shapes only, no 0.5B allocation
        model = CosyVoice2LM(config)
    model_shapes = {hf_key_to_cosyvoice(k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert model_shapes == {k: v for k, v in shapes.items() if k != "llm.model.lm_head.weight"}
