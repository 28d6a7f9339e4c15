"""RobustSERForAudioClassification: shapes, loss, the three input paths, the head, errors, Auto/remote code."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModelForAudioClassification

from rrpo_hf.data.labels import CANONICAL_EMOTIONS
from rrpo_hf.models.robust_ser import DEFAULT_EMOTIONS, RobustSERConfig, RobustSERForAudioClassification
from rrpo_hf.ops import apply_energy_adaptive_mixup, mixup_emotion_loss, sample_eam_plan


VOCAB = 40


def tiny_config(**overrides):
    values = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=24,
    )
    values.update(overrides)
    return RobustSERConfig(**values)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RobustSERForAudioClassification(tiny_config()).eval()


def padded_batch(lengths=(9, 5, 7), seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.full((len(lengths), max(lengths)), VOCAB, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(0, VOCAB, (length,), generator=generator)
        attention_mask[row, :length] = 1
    return input_ids, attention_mask


# ------------------------------------------------------------------------------------------------ config
def test_config_defaults_match_the_paper_and_the_label_table():
    config = RobustSERConfig()
    assert config.vocab_size == 6561 and config.pad_token_id == 6561
    assert (config.label_smoothing, config.adv_epsilon, config.adv_alpha) == (0.1, 0.5, 0.5)
    assert config.eam_snr_range == [-5.0, 5.0]
    assert DEFAULT_EMOTIONS == CANONICAL_EMOTIONS
    assert [config.id2label[i] for i in range(config.num_labels)] == list(CANONICAL_EMOTIONS)
    assert config.label2id == {name: i for i, name in enumerate(CANONICAL_EMOTIONS)}
    assert RobustSERConfig(num_labels=3).num_labels == 3


def test_config_round_trip_and_validation(tmp_path):
    tiny_config(pooling="mean", eam_snr_range=(-3, 2)).save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, RobustSERConfig)
    assert loaded.pooling == "mean" and loaded.eam_snr_range == [-3.0, 2.0] and loaded.pad_token_id == VOCAB
    with pytest.raises(Exception, match="pooling must be"):
        tiny_config(pooling="max")
    with pytest.raises(Exception, match="padding row"):
        tiny_config(pad_token_id=0)
    with pytest.raises(Exception, match="not divisible"):
        tiny_config(num_attention_heads=5)


# ------------------------------------------------------------------------------------------------ forward
def test_forward_shapes_mask_and_label_smoothed_loss(model):
    input_ids, attention_mask = padded_batch()
    labels = torch.tensor([0, 3, 5])
    output = model(input_ids=input_ids, labels=labels)
    assert output.logits.shape == (3, 6)
    assert output.last_hidden_state.shape == (3, 9, 32)
    assert torch.equal(output.attention_mask, attention_mask)  # derived from the pad id
    assert torch.equal(output.mixup_lambda, torch.zeros(3)) and output.partner_labels is None
    log_probs = torch.log_softmax(output.logits, dim=-1)
    targets = torch.full((3, 6), 0.1 / 6)
    targets[torch.arange(3), labels] += 0.9
    assert torch.allclose(output.loss, -(targets * log_probs).sum(-1).mean(), atol=1e-6)
    assert not model.accepts_loss_kwargs


def test_padding_does_not_change_a_sample(model):
    input_ids, attention_mask = padded_batch()
    batched = model(input_ids=input_ids, attention_mask=attention_mask).logits
    alone = model(input_ids=input_ids[1:2, :5]).logits
    assert torch.allclose(batched[1:2], alone, atol=1e-5)


def test_one_hot_probs_give_exactly_the_token_logits_and_gradients_reach_the_probs(model):
    input_ids, attention_mask = padded_batch()
    from_ids = model(input_ids=input_ids, attention_mask=attention_mask).logits
    probs = torch.nn.functional.one_hot(input_ids.clamp(max=VOCAB - 1), VOCAB).float().requires_grad_(True)
    from_probs = model(input_token_probs=probs, attention_mask=attention_mask).logits
    assert torch.equal(from_ids, from_probs)
    from_probs[:, 2].sum().backward()
    grad_norm_per_frame = probs.grad.norm(dim=-1)
    assert (grad_norm_per_frame[attention_mask.bool()] > 0).all()
    assert (grad_norm_per_frame[~attention_mask.bool()] == 0).all()


def test_inputs_embeds_path_and_head_reuse(model):
    input_ids, attention_mask = padded_batch()
    output = model(input_ids=input_ids, attention_mask=attention_mask)
    features = model.robust_ser.embed_tokens(input_ids=input_ids, attention_mask=attention_mask)
    from_embeds = model(inputs_embeds=features, attention_mask=attention_mask)
    assert torch.equal(output.logits, from_embeds.logits)
    # The head alone reproduces the logits from h', so an adversarial step needs no second encoder pass.
    assert torch.equal(model.classify(output.last_hidden_state, attention_mask), output.logits)
    hidden = output.last_hidden_state.detach().requires_grad_(True)
    model.classify(hidden + 0.1, attention_mask).sum().backward()
    assert hidden.grad is not None and hidden.grad[attention_mask.bool()].abs().sum() > 0


def test_eam_plan_is_applied_to_the_features_and_enters_the_loss(model):
    input_ids, attention_mask = padded_batch()
    labels = torch.tensor([1, 2, 4])
    plan = sample_eam_plan(attention_mask.sum(1), (-5.0, 5.0), torch.Generator().manual_seed(3))
    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **plan)
    features = model.robust_ser.embed_tokens(input_ids=input_ids, attention_mask=attention_mask)
    mixed, mixup_lambda = apply_energy_adaptive_mixup(features, attention_mask, **plan)
    assert torch.equal(output.mixup_lambda, mixup_lambda) and (mixup_lambda > 0).all()
    assert torch.equal(output.partner_labels, labels[plan["eam_partner"]])
    assert torch.equal(output.logits, model(inputs_embeds=mixed, attention_mask=attention_mask).logits)
    expected = mixup_emotion_loss(output.logits, labels, labels[plan["eam_partner"]], mixup_lambda, 0.1)
    assert torch.allclose(output.loss, expected)
    plain = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert not torch.allclose(plain.logits, output.logits)


def test_training_step_with_gradient_checkpointing_updates_every_trained_parameter():
    torch.manual_seed(0)
    model = RobustSERForAudioClassification(tiny_config())
    model.gradient_checkpointing_enable()
    model.train()
    input_ids, attention_mask = padded_batch()
    plan = sample_eam_plan(attention_mask.sum(1), (-5.0, 5.0), torch.Generator().manual_seed(0))
    model(input_ids=input_ids, attention_mask=attention_mask, labels=torch.tensor([0, 1, 2]), **plan).loss.backward()
    without_grad = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert without_grad == []
    assert model.robust_ser.token_embedding.weight.grad[VOCAB].abs().sum() == 0  # the padding row stays zero


@pytest.mark.parametrize(
    "make_inputs, message",
    [
        (
            lambda ids, mask: dict(input_ids=ids.masked_fill(ids == ids[0, 0], VOCAB + 3), attention_mask=mask),
            "out of the codebook",
        ),
        (
            lambda ids, mask: dict(input_ids=ids.masked_fill(ids == ids[0, 0], -1), attention_mask=mask),
            "out of the codebook",
        ),
        (lambda ids, mask: dict(input_ids=ids, attention_mask=mask * torch.tensor([[1], [0], [1]])), "empty"),
        (lambda ids, mask: dict(input_ids=torch.randint(0, VOCAB, (2, 30))), "max_position_embeddings"),
        (lambda ids, mask: dict(input_token_probs=torch.rand(3, 9, VOCAB + 3), attention_mask=mask), "vocab mismatch"),
        (lambda ids, mask: dict(), "exactly one"),
        (lambda ids, mask: dict(input_ids=ids, input_token_probs=torch.rand(3, 9, VOCAB)), "exactly one"),
        (lambda ids, mask: dict(inputs_embeds=torch.rand(3, 9, 7), attention_mask=mask), "hidden_size"),
        (lambda ids, mask: dict(input_ids=ids, attention_mask=mask, eam_partner=torch.tensor([1, 2, 0])), "missing"),
        (lambda ids, mask: dict(input_ids=ids, attention_mask=mask[:, :4]), "attention_mask"),
        (lambda ids, mask: dict(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 9])), r"\[0, 6\)"),
    ],
)
def test_bad_input_raises_a_clear_error(model, make_inputs, message):
    input_ids, attention_mask = padded_batch()
    with pytest.raises(ValueError, match=message):
        model(**make_inputs(input_ids, attention_mask))


def test_bad_token_id_error_names_the_value_and_the_fix(model):
    input_ids, attention_mask = padded_batch()
    input_ids[2, 4] = 6000
    with pytest.raises(
        ValueError, match=r"token id 6000 out of the codebook \[0, 40\) at sample 2, frame 4.*speech tokenizer"
    ):
        model(input_ids=input_ids, attention_mask=attention_mask)


# ------------------------------------------------------------------------------------------------ Auto / remote code
def test_auto_classes_and_save_round_trip(model, tmp_path):
    assert type(AutoModelForAudioClassification.from_config(model.config)) is RobustSERForAudioClassification
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForAudioClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is RobustSERForAudioClassification
    input_ids, attention_mask = padded_batch()
    assert torch.equal(model(input_ids=input_ids).logits, reloaded(input_ids=input_ids).logits)


def test_push_to_hub_uploads_the_bundled_folder(model, tmp_path, monkeypatch):
    pushed = {}

    def fake_push_to_hub(self, repo_id, **kwargs):  # the real one saves to a temp dir and uploads it
        pushed["repo_id"], pushed["kwargs"] = repo_id, kwargs
        pushed["files"] = set(os.listdir(tmp_path / "rm"))

    monkeypatch.setattr(RobustSERForAudioClassification, "push_to_hub", fake_push_to_hub)
    model.save_pretrained(tmp_path / "rm", push_to_hub=True, repo_id="me/robust-ser", commit_message="rm")
    assert pushed["repo_id"] == "me/robust-ser" and pushed["kwargs"]["commit_message"] == "rm"
    assert {"eam.py", "label_smoothing.py", "modeling_robust_ser.py", "model.safetensors"} <= pushed["files"]
    assert "from .eam import" in (tmp_path / "rm" / "modeling_robust_ser.py").read_text()


REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys

    class RefuseRrpoHf:  # proves the checkpoint does not need the library, even if it is installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "rrpo_hf":
                raise ImportError("rrpo_hf must not be imported by remote code")

    sys.meta_path.insert(0, RefuseRrpoHf())
    import torch
    from transformers import AutoModelForAudioClassification

    checkpoint, resaved, inputs_file, result_file = sys.argv[1:5]
    inputs = torch.load(inputs_file)
    model = AutoModelForAudioClassification.from_pretrained(checkpoint, trust_remote_code=True).eval()
    with torch.no_grad():
        plain = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=inputs["labels"])
        mixed = model(**inputs)
    # A remote-code model saves a folder that loads again as remote code.
    model.save_pretrained(resaved)
    again = AutoModelForAudioClassification.from_pretrained(resaved, trust_remote_code=True).eval()
    with torch.no_grad():
        again_logits = again(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    torch.save(
        {
            "class": type(model).__module__ + "." + type(model).__name__,
            "rrpo_hf_imported": any(name.split(".")[0] == "rrpo_hf" for name in sys.modules),
            "logits": plain.logits, "loss": plain.loss, "mixed_logits": mixed.logits, "mixed_loss": mixed.loss,
            "mixup_lambda": mixed.mixup_lambda, "again_logits": again_logits,
        },
        result_file,
    )
    """
)


@pytest.mark.slow  # a fresh interpreter imports torch + transformers (~10-20 s on the CI machine)
def test_saved_folder_loads_as_remote_code_without_rrpo_hf(model, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    saved_files = sorted(os.listdir(checkpoint))
    assert {"modeling_robust_ser.py", "configuration_robust_ser.py", "eam.py", "label_smoothing.py"} <= set(
        saved_files
    )
    for name in saved_files:
        if name.endswith(".py"):
            assert not re.search(
                r"^\s*(from|import)\s+(rrpo_hf|\.\.)", (checkpoint / name).read_text(), re.MULTILINE
            ), name
    auto_map = json.loads((checkpoint / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForAudioClassification"] == "modeling_robust_ser.RobustSERForAudioClassification"

    input_ids, attention_mask = padded_batch()
    labels = torch.tensor([1, 0, 5])
    plan = sample_eam_plan(attention_mask.sum(1), (-5.0, 5.0), torch.Generator().manual_seed(1))
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **plan)
    torch.save(inputs, tmp_path / "inputs.pt")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH",)}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            REMOTE_SCRIPT,
            str(checkpoint),
            str(tmp_path / "resaved"),
            str(tmp_path / "inputs.pt"),
            str(tmp_path / "out.pt"),
        ],
        cwd=workdir,
        env=env,
        check=True,
        timeout=300,
    )
    result = torch.load(tmp_path / "out.pt")
    assert result["class"].startswith("transformers_modules.") and not result["rrpo_hf_imported"]
    with torch.no_grad():
        plain = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        mixed = model(**inputs)
    assert torch.allclose(result["logits"], plain.logits, atol=1e-6)
    assert torch.allclose(result["loss"], plain.loss, atol=1e-6)
    assert torch.allclose(result["mixed_logits"], mixed.logits, atol=1e-6)
    assert torch.allclose(result["mixed_loss"], mixed.loss, atol=1e-6)
    assert torch.allclose(result["mixup_lambda"], mixed.mixup_lambda)
    assert torch.allclose(result["again_logits"], plain.logits, atol=1e-6)
