"""`DiffROConfig.eval_kl`: the KL of the policy from where training started, on the evaluation samples."""

import math

import pytest
import torch
from test_diffro_trainer import corpus, make_policy, make_reward_model, make_trainer, tokenizer  # noqa: F401

from rrpo_hf.ops import sequence_kl


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=4, target_modules=["q_proj", "v_proj"])


def trained_adapter_policy(tokenizer):  # noqa: F811
    """A PeftModel that arrives trained (e.g. LoRA-SFT): its starting point is not the bare base model."""
    from peft import get_peft_model

    policy = get_peft_model(make_policy(tokenizer), lora_config())
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)
    return policy


def kl_trainer(tmp_path, corpus, tokenizer, setup, **overrides):  # noqa: F811
    if setup == "lora":
        overrides["peft_config"] = lora_config()
    elif setup == "trained_adapter":
        overrides["policy"] = trained_adapter_policy(tokenizer)
    defaults = dict(eval_kl=True, beta=0.0, reward_adv_alpha=0.0, eval_dataset=corpus["test"])
    return make_trainer(tmp_path, corpus, tokenizer, **{**defaults, **overrides})


@pytest.mark.parametrize("setup", ["full", "lora", "trained_adapter"])
def test_kl_to_reference_is_zero_before_training_and_grows_with_training(tmp_path, corpus, tokenizer, setup):  # noqa: F811
    trainer = kl_trainer(tmp_path, corpus, tokenizer, setup, learning_rate=1e-2, max_steps=3)
    before = trainer.evaluate()
    assert before["eval_kl_to_reference"] == pytest.approx(0.0, abs=1e-6)
    assert before["eval_sqrt_kl_to_reference"] == pytest.approx(0.0, abs=1e-3)
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_kl_to_reference"] > 1e-5  # a LoRA adapter moves little in 3 steps; the start reads < 1e-6
    assert after["eval_sqrt_kl_to_reference"] == pytest.approx(math.sqrt(after["eval_kl_to_reference"]))
    assert trainer.model.training  # the evaluation pass turned dropout off for itself only
    assert "kl" not in trainer.state.log_history[0]  # β = 0: the reference exists but the loss never reads it


def test_kl_to_reference_matches_an_independent_computation(tmp_path, corpus, tokenizer, monkeypatch):  # noqa: F811
    trainer = kl_trainer(
        tmp_path, corpus, tokenizer, "full", learning_rate=1e-2, max_steps=2, per_device_eval_batch_size=8
    )
    trainer.train()
    recorded = []
    generate = trainer._generate

    def recording_generate(text_ids, text_attention_mask, generator, zero_shot=None):
        tokens = generate(text_ids, text_attention_mask, generator, zero_shot)
        recorded.append((text_ids, text_attention_mask, tokens))
        return tokens

    monkeypatch.setattr(trainer, "_generate", recording_generate)
    metrics = trainer.evaluate()
    assert len(recorded) == 1 and metrics["eval_samples"] == len(corpus["test"]) == 8

    text_ids, text_attention_mask, tokens = recorded[0]
    speech_ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(t) for t in tokens], batch_first=True)
    speech_attention_mask = torch.nn.utils.rnn.pad_sequence(
        [torch.ones(len(t), dtype=torch.long) for t in tokens], batch_first=True
    )
    inputs = dict(
        text_ids=text_ids,
        text_attention_mask=text_attention_mask,
        speech_ids=speech_ids,
        speech_attention_mask=speech_attention_mask,
    )
    policy, reference = trainer.model, trainer.ref_model
    policy.eval()
    with torch.no_grad():
        outputs, reference_logits = policy(**inputs), reference(**inputs).logits
    policy.train()
    # The valid positions: each sample's speech tokens and the step that predicts its eos.
    lengths = torch.tensor([len(t) for t in tokens])
    assert torch.equal(outputs.logits_mask.sum(dim=1), lengths + 1)
    expected = sequence_kl(outputs.logits, reference_logits, outputs.logits_mask).mean().item()
    assert expected > 1e-3
    assert metrics["eval_kl_to_reference"] == pytest.approx(expected, rel=1e-5)
    assert metrics["eval_sqrt_kl_to_reference"] == pytest.approx(math.sqrt(expected), rel=1e-5)


def test_eval_kl_builds_the_reference_even_at_beta_zero(tmp_path, corpus, tokenizer):  # noqa: F811
    with_kl = kl_trainer(tmp_path, corpus, tokenizer, "full")
    assert with_kl.ref_model is not None and with_kl.ref_model is not with_kl.model
    assert not any(param.requires_grad for param in with_kl.ref_model.parameters())
    assert make_trainer(tmp_path, corpus, tokenizer, beta=0.0).ref_model is None  # no copy without eval_kl
    assert kl_trainer(tmp_path, corpus, tokenizer, "trained_adapter").ref_adapter_name == "ref"
    without = make_trainer(tmp_path, corpus, tokenizer, policy=trained_adapter_policy(tokenizer), beta=0.0)
    assert without.ref_adapter_name is None and "ref" not in without.model.peft_config
    fresh = kl_trainer(tmp_path, corpus, tokenizer, "lora")
    assert fresh.ref_model is None and fresh.ref_adapter_name is None  # the disabled adapter: no copy at all


def test_eval_kl_changes_no_other_metric_nor_the_training(tmp_path, corpus, tokenizer):  # noqa: F811
    runs = {}
    for eval_kl in (False, True):
        trainer = make_trainer(
            tmp_path,
            corpus,
            tokenizer,
            reward_model=make_reward_model(),
            eval_kl=eval_kl,
            beta=0.0,
            eval_dataset=corpus["test"],
            eval_strategy="steps",
            eval_steps=1,
        )
        trainer.train()
        runs[eval_kl] = trainer.state.log_history
    plain, with_kl = runs[False], runs[True]
    assert len(plain) == len(with_kl)
    for before, after in zip(plain, with_kl):
        assert not any("kl_to_reference" in key for key in before)
        assert {key for key in after if "kl_to_reference" not in key} == set(before)
        for key, value in before.items():
            if not key.endswith(("runtime", "per_second")):
                assert after[key] == value, key
    assert any("eval_kl_to_reference" in entry for entry in with_kl)


def test_kl_to_reference_teacher_forces_the_zero_shot_prompt_speech(tmp_path, corpus, tokenizer, monkeypatch):  # noqa: F811
    """Samples continue a prompt's speech, so the KL pass must read that prompt too, as generation did."""
    rows = corpus["test"]
    prompts = [rows[(i - 1) % len(rows)] for i in range(len(rows))]
    rows = rows.add_column("prompt_text", [row["text"] for row in prompts])
    rows = rows.add_column("prompt_speech_tokens", [row["speech_tokens"][:6] for row in prompts])
    trainer = kl_trainer(tmp_path, corpus, tokenizer, "full", eval_dataset=rows)
    forward_calls = []
    forward = trainer.model.forward

    def recording_forward(*args, **kwargs):
        forward_calls.append(kwargs)
        return forward(*args, **kwargs)

    monkeypatch.setattr(trainer.model, "forward", recording_forward)
    metrics = trainer.evaluate()
    assert metrics["eval_kl_to_reference"] == pytest.approx(0.0, abs=1e-6)
    teacher_forced = [kwargs for kwargs in forward_calls if "speech_ids" in kwargs]
    assert teacher_forced and all(kwargs["prompt_speech_ids"].shape[1] == 6 for kwargs in teacher_forced)


@pytest.mark.parametrize("name", ["kl_to_reference", "sqrt_kl_to_reference"])
def test_a_scorer_cannot_take_the_names_eval_kl_reports(tmp_path, corpus, tokenizer, name):  # noqa: F811
    trainer = kl_trainer(tmp_path, corpus, tokenizer, "full")
    trainer.eval_scorers.append(lambda tokens, batch: {name: [0.0] * len(tokens)})
    with pytest.raises(ValueError, match=f"Two evaluation scores are named '{name}'"):
        trainer.evaluate()
