"""One RobustSER encoder (`RobustSERModel`) under both heads: folders saved before it existed still load, with the
same outputs, and a fixed seed builds the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel, AutoModelForAudioClassification

from rrpo_hf.models.robust_ser import (
    RobustMultiTaskRMConfig,
    RobustSERConfig,
    RobustSERForAudioClassification,
    RobustSERForMultiTaskReward,
    RobustSERModel,
)
from rrpo_hf.ops import sample_eam_plan


FIXTURES = Path(__file__).parent / "fixtures" / "robust_ser_before_shared_encoder"
SMALL = dict(
    vocab_size=12, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
    max_position_embeddings=16,
)  # fmt: skip
IDS = torch.tensor([[1, 2, 3, 4, 5, 6, 12, 12], [7, 8, 9, 10, 11, 0, 1, 2]])
MASK = (IDS != 12).long()
# The encoder's keys in a folder saved before the encoder was its own model (one layer).
OLD_ENCODER_KEYS = {"token_embedding.weight", "encoder.position_embeddings.weight"} | {
    f"encoder.{name}.{kind}"
    for name in (
        "layers.0.attention_layer_norm", "layers.0.attention.qkv_proj", "layers.0.attention.out_proj",
        "layers.0.feed_forward_layer_norm", "layers.0.feed_forward.up_proj", "layers.0.feed_forward.down_proj",
        "final_layer_norm",
    )
    for kind in ("weight", "bias")
}  # fmt: skip
HEADS = {
    "ser": (AutoModelForAudioClassification, {"pooler.score", "classifier"}),
    "mtr": (AutoModel, {"pooler.score", "classifier", "asr_head", "quality_pooler.score", "quality_head"}),
}


def token_probs() -> torch.Tensor:
    return torch.softmax(torch.randn(2, 8, 12, generator=torch.Generator().manual_seed(3)), -1)


def saved_keys(folder: Path) -> set[str]:
    with safe_open(folder / "model.safetensors", "pt") as handle:
        return set(handle.keys())


def fixture_keys(name: str) -> set[str]:
    return saved_keys(FIXTURES / name)


@pytest.mark.parametrize("name", list(HEADS))
def test_a_folder_saved_before_the_shared_encoder_loads_with_every_weight_and_the_same_outputs(name):
    auto_class, head_modules = HEADS[name]
    head_keys = {f"{module}.{kind}" for module in head_modules for kind in ("weight", "bias")}
    assert fixture_keys(name) == OLD_ENCODER_KEYS | head_keys  # the fixture has the old layout

    model, info = auto_class.from_pretrained(FIXTURES / name, output_loading_info=True)
    assert not any(info.values()), info
    assert isinstance(model.robust_ser, RobustSERModel)
    assert set(model.state_dict()) == {f"robust_ser.{key}" for key in OLD_ENCODER_KEYS} | head_keys

    expected = json.loads((FIXTURES / name / "expected_outputs.json").read_text())
    model.eval()
    with torch.no_grad():
        by_ids = model(input_ids=IDS, attention_mask=MASK)
        by_probs = model(input_token_probs=token_probs(), attention_mask=MASK)
    assert torch.equal(by_ids.logits, torch.tensor(expected["logits_ids"]))
    assert torch.equal(by_probs.logits, torch.tensor(expected["logits_probs"]))
    if name == "mtr":
        assert torch.equal(by_ids.asr_logits, torch.tensor(expected["asr_logits_ids"]))
        assert torch.equal(by_ids.quality_logits, torch.tensor(expected["quality_logits_ids"]))


@pytest.mark.parametrize("name", list(HEADS))
def test_a_fixed_seed_builds_the_weights_it_built_before_the_shared_encoder(name):
    """The fixtures hold seed-0 initial weights of the old code: the encoder's own post_init must not move the RNG."""
    torch.manual_seed(0)
    if name == "ser":
        model = RobustSERForAudioClassification(RobustSERConfig(**SMALL))
    else:
        config = RobustMultiTaskRMConfig(**SMALL, tasks=["emotion", "asr", "quality"], asr_labels=["a", "b", "c"])
        model = RobustSERForMultiTaskReward(config)
    state = {key.removeprefix("robust_ser."): value for key, value in model.state_dict().items()}
    with safe_open(FIXTURES / name / "model.safetensors", "pt") as handle:
        for key in handle.keys():
            assert torch.equal(state[key], handle.get_tensor(key)), key


def test_the_encoder_alone_loads_from_a_head_folder_old_or_new_and_gives_the_heads_h_prime(tmp_path):
    head = AutoModelForAudioClassification.from_pretrained(FIXTURES / "ser").eval()
    head.save_pretrained(tmp_path / "new")
    assert "robust_ser.token_embedding.weight" in saved_keys(tmp_path / "new")
    with torch.no_grad():
        expected = head(input_ids=IDS, attention_mask=MASK).last_hidden_state
        for folder in (FIXTURES / "ser", tmp_path / "new"):
            encoder = RobustSERModel.from_pretrained(folder).eval()
            assert torch.equal(encoder(input_ids=IDS, attention_mask=MASK).last_hidden_state, expected)
    # Standalone, the encoder initialises its own weights (its LayerNorms at 1, the padding row at 0).
    encoder = RobustSERModel(RobustSERConfig(**SMALL))
    assert torch.equal(encoder.encoder.final_layer_norm.weight, torch.ones(8))
    assert torch.equal(encoder.token_embedding.weight[12], torch.zeros(8))
    assert head.get_input_embeddings() is head.robust_ser.token_embedding


def test_the_multitask_heads_other_than_emotion_read_the_unmixed_half_of_one_encoder_pass():
    torch.manual_seed(0)
    config = RobustMultiTaskRMConfig(**SMALL, tasks=["emotion", "quality"])
    model = RobustSERForMultiTaskReward(config).eval()
    plan = sample_eam_plan(MASK.sum(1), generator=torch.Generator().manual_seed(1))
    passes = []
    handle = model.robust_ser.encoder.register_forward_hook(lambda module, args, output: passes.append(output.shape))
    with torch.no_grad():
        mixed = model(input_ids=IDS, attention_mask=MASK, **plan)
        clean = model(input_ids=IDS, attention_mask=MASK)
    handle.remove()
    assert passes == [(4, 8, 8), (2, 8, 8)]  # one pass over [mixed; un-mixed], then one plain pass
    torch.testing.assert_close(mixed.quality_logits, clean.quality_logits)
    assert not torch.allclose(mixed.logits, clean.logits)
    assert (mixed.mixup_lambda > 0).all()
