"""`DiffROTrainer` with several rewards (docs/architecture.md, "Several rewards"): which functions a `reward_model` /
`reward_funcs` give, gradients through each, the loss formula (weights, gate, ensemble aggregations), checks before
training, logs, saved multi-task folders, resume, the example script and its recipe, and a toy run where the ASR reward
lowers the oracle CER of the policy's generations.

Expected losses are recomputed here from the sampled token ids with the reward models' plain forward and torch's own
functions (`F.ctc_loss`, `log_softmax`), not with the trainer's code.
"""

import copy
import math
import os

import pytest
import torch
import torch.nn.functional as F
from test_diffro_trainer import (  # noqa: F401  (fixtures)
    CODEBOOK,
    corpus,
    first_batch,
    make_args,
    make_policy,
    make_reward_model,
    tokenizer,
)

from rrpo_hf.models.robust_ser import RobustMultiTaskRMConfig, RobustSERForMultiTaskReward
from rrpo_hf.ops import edit_distance, error_rate
from rrpo_hf.rewards import ASRErrorRate, ASRReward, EmotionReward, EmotionRMEnsemble, QualityReward
from rrpo_hf.testbed import asr_vocabulary
from rrpo_hf.trainers import DiffROConfig, DiffROTrainer


REPO = os.path.join(os.path.dirname(__file__), "..")


def make_multitask_rm(tasks=("emotion", "asr", "quality"), seed=7):
    torch.manual_seed(seed)
    config = RobustMultiTaskRMConfig(
        vocab_size=CODEBOOK,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        tasks=list(tasks),
        asr_labels=asr_vocabulary() if "asr" in tasks else None,
    )
    return RobustSERForMultiTaskReward(config)


def short_codes(token_probs, attention_mask, batch):
    """A plain callable reward: the share of low ids (< 64) among the valid frames (lower is better)."""
    low = token_probs[..., :64].sum(dim=-1) * attention_mask
    return low.sum(dim=1) / attention_mask.sum(dim=1)


def build(tmp_path, corpus, tokenizer, reward_model="default", reward_funcs=None, policy=None, **overrides):  # noqa: F811
    extra = {key: overrides.pop(key) for key in ("eval_dataset", "train_dataset") if key in overrides}
    train_dataset = extra.pop("train_dataset", corpus["train"])
    return DiffROTrainer(
        model=policy if policy is not None else make_policy(tokenizer),
        reward_model=make_reward_model() if reward_model == "default" else reward_model,
        reward_funcs=reward_funcs,
        args=make_args(tmp_path, **{"beta": 0.0, **overrides}),
        train_dataset=train_dataset,
        processing_class=tokenizer,
        **extra,
    )


def emotion_loss_by_hand(model, ids, mask, emotions, epsilon):
    """Per-sample label-smoothed cross-entropy of the target emotions (Eq. 2-3, λ = 0)."""
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
    targets = torch.tensor([model.config.label2id[name] for name in emotions])
    nll = -log_probs[torch.arange(len(emotions)), targets]
    return (1 - epsilon) * nll - epsilon * log_probs.mean(dim=-1)


def asr_loss_by_hand(model, ids, mask, texts):
    """Per-sample CTC loss per transcript symbol, with `F.ctc_loss`."""
    symbols = list(model.config.asr_labels)
    targets = [torch.tensor([symbols.index(s) + 1 for s in text.split()]) for text in texts]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).asr_logits
    log_probs = torch.log_softmax(logits.float(), dim=-1).transpose(0, 1)
    lengths = torch.tensor([len(t) for t in targets])
    loss = F.ctc_loss(log_probs, torch.cat(targets), mask.sum(1), lengths, blank=0, reduction="none")
    return loss / lengths


def quality_loss_by_hand(model, ids, mask):
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).quality_logits
    return -torch.log_softmax(logits.float(), dim=-1)[:, -1]  # the best class, "5"


# ------------------------------------------------------------------------------------------------ which functions


def test_reward_models_in_reward_funcs_expand_into_their_heads(tmp_path, corpus, tokenizer):  # noqa: F811
    mt_dir, mt2_dir, rm_dir = tmp_path / "mt", tmp_path / "mt2", tmp_path / "rm2"
    make_multitask_rm().save_pretrained(mt_dir)
    make_multitask_rm(seed=8).save_pretrained(mt2_dir)
    make_reward_model(seed=4).save_pretrained(rm_dir)

    # No reward_model: the multi-task model's emotion head is the emotion reward.
    trainer = build(tmp_path, corpus, tokenizer, reward_model=None, reward_funcs=[str(mt_dir)])
    assert trainer.reward_func_names == ["emotion", "asr", "quality"]
    assert isinstance(trainer.reward_model, RobustSERForMultiTaskReward)  # loaded with AutoModel
    assert all(f.model is trainer.reward_model for f in trainer.reward_funcs)  # one frozen copy, three heads
    saved = make_multitask_rm().state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in trainer.reward_model.state_dict().items())
    assert not any(p.requires_grad for p in trainer.reward_model.parameters())

    # With a reward_model, the multi-task emotion head is not used; a second multi-task model gets suffixes; an
    # emotion classifier alone is an extra emotion reward.
    rm = make_reward_model()
    trainer = build(
        tmp_path, corpus, tokenizer, reward_model=rm, reward_funcs=[str(mt_dir), str(mt2_dir), str(rm_dir)]
    )
    assert trainer.reward_func_names == ["emotion", "asr", "quality", "asr_2", "quality_2", "emotion_2"]
    assert trainer.reward_model is rm and trainer.emotion_reward.model is rm
    assert [type(f) for f in trainer.reward_funcs] == [
        EmotionReward,
        ASRReward,
        QualityReward,
        ASRReward,
        QualityReward,
        EmotionReward,
    ]
    assert trainer.reward_weights == [1.0] * 6

    # A list of reward models is an ensemble.
    trainer = build(tmp_path, corpus, tokenizer, reward_model=[make_reward_model(seed=1), str(rm_dir)])
    assert isinstance(trainer.emotion_reward, EmotionRMEnsemble) and len(trainer.emotion_reward.members) == 2


# ------------------------------------------------------------------------------------------------ gradients


def reward_setups():
    """name -> (reward_model, reward_funcs, weights): only the named reward function has a non-zero weight."""
    return {
        "emotion": (make_reward_model(), [short_codes], [1.0, 0.0]),
        "ensemble": ([make_reward_model(seed=1), make_reward_model(seed=2)], [short_codes], [1.0, 0.0]),
        "asr": (make_reward_model(), [make_multitask_rm()], [0.0, 1.0, 0.0]),
        "quality": (make_reward_model(), [make_multitask_rm()], [0.0, 0.0, 1.0]),
        "callable": (make_reward_model(), [short_codes], [0.0, 1.0]),
        "none (all weights 0)": (make_reward_model(), [make_multitask_rm()], [0.0, 0.0, 0.0]),
    }


@pytest.mark.parametrize("which", list(reward_setups()))
def test_gradients_reach_the_policy_through_every_reward_function(tmp_path, corpus, tokenizer, which):  # noqa: F811
    reward_model, reward_funcs, weights = reward_setups()[which]
    trainer = build(
        tmp_path, corpus, tokenizer, reward_model, reward_funcs, reward_weights=weights, reward_adv_alpha=0.5
    )
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, first_batch(trainer))
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    decoder = grads["llm_decoder.weight"].abs().sum().item()
    layer = grads["model.layers.0.self_attn.q_proj.weight"].abs().sum().item()
    if which.startswith("none"):
        assert decoder == 0 and layer == 0  # the non-zero gradients above come from the weighted function alone
    else:
        assert decoder > 0 and layer > 0, which
    frozen = [p for f in trainer.reward_funcs if isinstance(f, torch.nn.Module) for p in f.parameters()]
    assert frozen and all(p.grad is None for p in frozen)  # through the reward models, never into them


# ------------------------------------------------------------------------------------------------ loss formulas


def test_loss_is_the_weighted_sum_of_the_reward_losses(tmp_path, corpus, tokenizer):  # noqa: F811
    rm, mt = make_reward_model(), make_multitask_rm()
    weights = [0.3, 2.0, 0.5, 1.5]
    trainer = build(tmp_path, corpus, tokenizer, rm, [mt, short_codes], reward_weights=weights, reward_adv_alpha=0.0)
    assert trainer.reward_func_names == ["emotion", "asr", "quality", "short_codes"]
    batch = first_batch(trainer)
    loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    ids, mask = outputs["sampled_ids"], batch["speech_attention_mask"]
    per_function = {
        "emotion": emotion_loss_by_hand(rm, ids, mask, batch["target_emotions"], epsilon=0.1),
        "asr": asr_loss_by_hand(mt, ids, mask, batch["texts"]),
        "quality": quality_loss_by_hand(mt, ids, mask),
        "short_codes": short_codes(F.one_hot(ids, CODEBOOK).float(), mask, batch),
    }
    for name, expected in per_function.items():
        torch.testing.assert_close(outputs["reward_losses"][name].detach(), expected, rtol=1e-4, atol=1e-5)
    expected_loss = sum(w * per_function[name].mean() for w, name in zip(weights, per_function))
    torch.testing.assert_close(loss.detach(), expected_loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.0, 0.3], ids=["hard", "soft"])
def test_gate_scales_the_emotion_loss_per_sample(tmp_path, corpus, tokenizer, temperature):  # noqa: F811
    def trainer_with(**gate):
        # Same seeds: both trainers draw the same batch and the same Gumbel noise at their first step.
        return build(
            tmp_path,
            corpus,
            tokenizer,
            make_reward_model(),
            [make_multitask_rm(("asr",))],
            reward_adv_alpha=0.0,
            **gate,
        )

    plain = trainer_with()
    _, ungated = plain.compute_loss(plain.model, first_batch(plain), return_outputs=True)
    asr_reward = -ungated["reward_losses"]["asr"].detach()
    threshold = asr_reward.median().item()  # some samples pass, some fail
    gated = trainer_with(reward_gate="asr", reward_gate_threshold=threshold, reward_gate_temperature=temperature)
    loss, outputs = gated.compute_loss(gated.model, first_batch(gated), return_outputs=True)
    assert torch.equal(outputs["sampled_ids"], ungated["sampled_ids"])

    if temperature == 0:
        gate = (asr_reward >= threshold).float()
        assert 0 < gate.sum() < len(gate)
    else:
        gate = 1 / (1 + torch.exp(-(asr_reward - threshold) / temperature))
    torch.testing.assert_close(outputs["gate_weights"], gate)
    emotion, asr = ungated["reward_losses"]["emotion"].detach(), ungated["reward_losses"]["asr"].detach()
    torch.testing.assert_close(loss.detach(), (gate * emotion).mean() + asr.mean(), rtol=1e-5, atol=1e-6)
    assert not torch.isclose(loss.detach(), emotion.mean() + asr.mean())  # the gate changed the loss


def test_error_rate_counts_edits_per_reference_symbol():
    assert edit_distance("kitten", "sitting") == 3 and edit_distance([], [1, 2]) == 2 and edit_distance([1], []) == 1
    assert error_rate("a b c".split(), "a x c d".split()) == 2 / 4
    assert error_rate([], []) == 0.0 and error_rate(["a"], []) == 1.0


def test_cer_gate_lets_the_emotion_loss_through_only_for_intelligible_samples(tmp_path, corpus, tokenizer):  # noqa: F811
    asr_model = make_multitask_rm(("asr",))
    plain = build(tmp_path, corpus, tokenizer, make_reward_model(), [asr_model], reward_adv_alpha=0.0)
    _, ungated = plain.compute_loss(plain.model, first_batch(plain), return_outputs=True)
    batch = first_batch(plain)
    assert plain.args.rollout == "offline"  # the samples are read under the dataset speech's mask
    ids, mask = ungated["sampled_ids"], batch["speech_attention_mask"]
    with torch.no_grad():
        decoded = asr_model.decode_asr(asr_model(input_ids=ids, attention_mask=mask).asr_logits, mask)
    cer = torch.tensor([error_rate(h.split(), r.split()) for h, r in zip(decoded, batch["texts"])])
    threshold = -cer.median().item()  # some samples pass the gate, some do not

    gated = build(
        tmp_path,
        corpus,
        tokenizer,
        make_reward_model(),
        [ASRErrorRate(copy.deepcopy(asr_model))],
        reward_adv_alpha=0.0,
        reward_weights=[1.0, 0.0],
        reward_gate="asr_cer",
        reward_gate_threshold=threshold,
    )
    assert gated.reward_func_names == ["emotion", "asr_cer"]
    loss, outputs = gated.compute_loss(gated.model, first_batch(gated), return_outputs=True)
    torch.testing.assert_close(outputs["reward_losses"]["asr_cer"], cer)
    assert not outputs["reward_losses"]["asr_cer"].requires_grad
    gate = (-cer >= threshold).float()
    assert 0 < gate.sum() < len(gate)
    torch.testing.assert_close(outputs["gate_weights"], gate)
    emotion = ungated["reward_losses"]["emotion"].detach()
    torch.testing.assert_close(loss.detach(), (gate * emotion).mean(), rtol=1e-5, atol=1e-6)
    assert "asr_cer" not in gated.rewards._warned_no_gradient  # weight 0: a gate, not a reward that should train


@pytest.mark.parametrize("aggregation", ["mean", "min", "mean_minus_std"])
def test_each_ensemble_aggregation_gives_its_formula(tmp_path, corpus, tokenizer, aggregation):  # noqa: F811
    order = ["sad", "fearful", "happy", "neutral", "angry", "surprised"]
    members = [make_reward_model(seed=1), make_reward_model(seed=2, emotions=order), make_reward_model(seed=3)]
    trainer = build(
        tmp_path,
        corpus,
        tokenizer,
        members,
        reward_aggregation=aggregation,
        reward_ensemble_std_coef=0.5,
        reward_adv_alpha=0.0,
    )
    batch = first_batch(trainer)
    loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    ids, mask = outputs["sampled_ids"], batch["speech_attention_mask"]
    rewards = -torch.stack([emotion_loss_by_hand(m, ids, mask, batch["target_emotions"], 0.1) for m in members], 1)
    mean = rewards.mean(dim=1)
    aggregate = {
        "mean": mean,
        "min": rewards.min(dim=1).values,
        "mean_minus_std": mean - 0.5 * ((rewards - mean[:, None]) ** 2).mean(dim=1).sqrt(),
    }
    torch.testing.assert_close(loss.detach(), -aggregate[aggregation].mean(), rtol=1e-5, atol=1e-6)
    others = [-value.mean() for name, value in aggregate.items() if name != aggregation]
    assert all(not torch.isclose(loss.detach(), other) for other in others)  # the aggregations differ here


# ------------------------------------------------------------------------------------------------ errors at init


def test_errors_are_raised_before_training_and_name_the_fix(tmp_path, corpus, tokenizer):  # noqa: F811
    mt = make_multitask_rm()
    with pytest.raises(ValueError, match=r"'emotion' needs the 'emotion' head.*tasks=\['asr'\]"):
        build(tmp_path, corpus, tokenizer, make_multitask_rm(("asr",)))
    with pytest.raises(ValueError, match=r"'asr' needs the 'asr' head.*tasks=\['emotion', 'quality'\]"):
        build(tmp_path, corpus, tokenizer, reward_funcs=[ASRReward(make_multitask_rm(("emotion", "quality")))])
    with pytest.raises(ValueError, match=r"reward_weights has 2 entries.*3 reward functions \['emotion', 'asr'"):
        build(tmp_path, corpus, tokenizer, reward_funcs=[mt], reward_weights=[1.0, 0.5])
    with pytest.raises(ValueError, match=r"reward_gate='asr' names no reward function.*\['emotion', 'short_codes'\]"):
        build(tmp_path, corpus, tokenizer, reward_funcs=[short_codes], reward_gate="asr", reward_gate_threshold=-1)
    with pytest.raises(ValueError, match="is the emotion reward itself"):
        build(tmp_path, corpus, tokenizer, reward_funcs=[mt], reward_gate="emotion", reward_gate_threshold=-1)
    with pytest.raises(ValueError, match=r"Several reward functions are named \['short_codes'\]"):
        build(tmp_path, corpus, tokenizer, reward_funcs=[short_codes, short_codes])
    with pytest.raises(ValueError, match="needs an emotion reward"):
        build(tmp_path, corpus, tokenizer, reward_model=None, reward_funcs=[short_codes])

    def per_frame(token_probs, attention_mask, batch):
        return token_probs.sum(dim=-1)  # (B, L): not reduced over the frames

    with pytest.raises(ValueError, match=r"'per_frame' returned shape \(2, \d+\) on a batch of 2 samples"):
        build(tmp_path, corpus, tokenizer, reward_funcs=[per_frame])

    def two_arguments(token_probs, attention_mask):
        return attention_mask.sum(1).float()

    with pytest.raises(TypeError, match=r"'two_arguments' has the signature.*f\(token_probs, attention_mask, batch\)"):
        build(tmp_path, corpus, tokenizer, reward_funcs=[two_arguments])

    bad_text = corpus["train"].map(
        lambda row, i: {"text": row["text"] + " zz" if i == 3 else row["text"]}, with_indices=True
    )
    with pytest.raises(ValueError, match=r"reward 'asr' cannot score the train dataset's 'text': Text 3 .*'zz'"):
        build(tmp_path, corpus, tokenizer, reward_funcs=[mt], train_dataset=bad_text)

    with pytest.raises(ValueError, match="needs reward_gate_threshold"):
        DiffROConfig(output_dir=str(tmp_path), reward_gate="asr")
    with pytest.raises(ValueError, match="reward_aggregation must be one of"):
        DiffROConfig(output_dir=str(tmp_path), reward_aggregation="max")
    with pytest.raises(ValueError, match="finite numbers"):
        DiffROConfig(output_dir=str(tmp_path), reward_weights=[1.0, float("nan")])
    with pytest.raises(ValueError, match="reward_gate_temperature must be >= 0"):
        DiffROConfig(output_dir=str(tmp_path), reward_gate_temperature=-1.0)


def test_a_callable_without_gradient_is_reported_at_init(tmp_path, corpus, tokenizer, caplog):  # noqa: F811
    def detached(token_probs, attention_mask, batch):
        return attention_mask.sum(dim=1).float()

    with caplog.at_level("WARNING", logger="rrpo_hf.trainers.diffro_trainer"):
        build(tmp_path, corpus, tokenizer, reward_funcs=[detached])
    assert "'detached' returned a loss without gradient" in caplog.text


# ------------------------------------------------------------------------------------------------ logs


def test_logs_hold_each_reward_and_their_weighted_sum(tmp_path, corpus, tokenizer):  # noqa: F811
    weights = [1.0, 0.5, 0.25, 2.0]
    trainer = build(
        tmp_path,
        corpus,
        tokenizer,
        reward_funcs=[make_multitask_rm(), short_codes],
        reward_weights=weights,
        reward_gate="asr",
        reward_gate_threshold=-8.0,
        reward_gate_temperature=1.0,
        eval_dataset=corpus["test"],
    )
    trainer.train()
    names = trainer.reward_func_names
    entries = [entry for entry in trainer.state.log_history if "loss" in entry and "reward" in entry]
    assert len(entries) == 2
    for entry in entries:
        assert {f"rewards/{name}/mean" for name in names} | {"gate_weight", "loss_emo", "rm_accuracy"} <= set(entry)
        assert {f"rewards/{name}/std" for name in names} | {"reward_std"} <= set(entry)
        weighted = sum(w * entry[f"rewards/{name}/mean"] for w, name in zip(weights, names))
        assert entry["reward"] == pytest.approx(weighted, rel=1e-5)
        assert 0 <= entry["gate_weight"] <= 1
    metrics = trainer.evaluate()
    weighted = sum(w * metrics[f"eval_rewards/{name}/mean"] for w, name in zip(weights, names))
    assert metrics["eval_reward"] == pytest.approx(weighted, rel=1e-5)


def test_a_single_reward_model_logs_exactly_what_it_always_did(tmp_path, corpus, tokenizer):  # noqa: F811
    trainer = build(tmp_path, corpus, tokenizer, beta=0.1, eval_dataset=corpus["test"])
    trainer.train()
    trainer.evaluate()
    keys = set().union(*(entry.keys() for entry in trainer.state.log_history))
    assert {"reward", "loss_emo", "loss_adv", "kl", "rm_accuracy", "entropy", "sample_length", "eval_reward"} <= keys
    assert not any("gate" in key or "ensemble" in key for key in keys)
    # TRL's per-function names, also for one function: its mean is `reward`
    rows = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all(entry["rewards/emotion/mean"] == pytest.approx(entry["reward"], rel=1e-5) for entry in rows)


def test_model_card_lists_the_reward_functions(tmp_path, corpus, tokenizer):  # noqa: F811
    trainer = build(
        tmp_path,
        corpus,
        tokenizer,
        reward_model=[make_reward_model(seed=1), make_reward_model(seed=2)],
        reward_funcs=[make_multitask_rm(("asr",))],
        reward_weights=[1.0, 0.5],
        reward_aggregation="min",
        reward_gate="asr",
        reward_gate_threshold=-2.0,
        max_steps=1,
    )
    trainer.train()
    trainer.save_model()
    card = open(os.path.join(trainer.args.output_dir, "README.md"), encoding="utf-8").read()
    assert "| reward functions (weight) | emotion (1), asr (0.5) |" in card
    assert "| emotion RM ensemble | 2 models, min |" in card
    assert "| emotion reward gate | 1[r_asr >= -2] |" in card


# ------------------------------------------------------------------------------------------------ resume


def test_resume_with_several_rewards_reproduces_the_uninterrupted_run(tmp_path, corpus, tokenizer):  # noqa: F811
    def run(output_dir, max_steps, resume=None):
        trainer = build(
            output_dir,
            corpus,
            tokenizer,
            reward_funcs=[make_multitask_rm(), short_codes],
            reward_weights=[1.0, 0.5, 0.2, 0.1],
            reward_gate="asr",
            reward_gate_threshold=-8.0,
            reward_gate_temperature=0.5,
            beta=0.1,
            max_steps=max_steps,
            save_strategy="steps",
            save_steps=2,
        )
        trainer.train(resume_from_checkpoint=resume)
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry and "reward" in entry]
        return trainer, losses

    full, full_losses = run(tmp_path / "full", 4)
    checkpoint = tmp_path / "full" / "out" / "checkpoint-2"
    assert checkpoint.is_dir() and len(full_losses) == 4
    resumed, resumed_losses = run(tmp_path / "resumed", 4, resume=str(checkpoint))
    assert resumed.state.global_step == 4
    assert resumed_losses[-2:] == full_losses[-2:]  # steps 3 and 4, run after the resume
    reference = dict(full.model.named_parameters())
    assert all(torch.equal(param, reference[name]) for name, param in resumed.model.named_parameters())


# ------------------------------------------------------------------------------------------------ example script


def run_example(argv):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("rrpo_rewards_example", os.path.join(REPO, "examples", "rrpo.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module, module.make_parser().parse_args_and_config(argv)


def test_example_script_runs_with_several_rewards(tmp_path, tokenizer):  # noqa: F811
    folders = {name: tmp_path / name for name in ("sft", "rm", "rm2", "mt")}
    make_policy(tokenizer).save_pretrained(folders["sft"])
    tokenizer.save_pretrained(folders["sft"])
    make_reward_model(seed=1).save_pretrained(folders["rm"])
    make_reward_model(seed=2).save_pretrained(folders["rm2"])
    make_multitask_rm().save_pretrained(folders["mt"])
    # The weights tilt the loss toward ASR; the gate lets a sample's emotion loss count only above its ASR reward.
    argv = [
        "--config",
        os.path.join(REPO, "recipes", "toy", "rrpo.yaml"),
        "--model_name_or_path",
        str(folders["sft"]),
        "--reward_model_path",
        str(folders["rm"]),
        "--ensemble_reward_model_paths",
        str(folders["rm2"]),
        "--reward_aggregation",
        "mean_minus_std",
        "--reward_ensemble_std_coef",
        "0.5",
        "--reward_funcs",
        str(folders["mt"]),
        "--reward_weights",
        "1.0",
        "2.0",
        "0.25",
        "--reward_gate",
        "asr",
        "--reward_gate_threshold",
        "-7.5",
        "--reward_gate_temperature",
        "0.5",
        "--output_dir",
        str(tmp_path / "out"),
        "--testbed_num_train",
        "16",
        "--testbed_num_test",
        "4",
        "--max_steps",
        "2",
        "--logging_steps",
        "1",
        "--max_new_tokens",
        "8",
        "--per_device_train_batch_size",
        "4",
        "--evaluate_before_training",
        "false",
    ]
    module, (script_args, training_args, model_args) = run_example(argv)
    trainer = module.main(script_args, training_args, model_args)
    assert trainer.reward_func_names == ["emotion", "asr", "quality"]
    assert trainer.reward_weights == [1.0, 2.0, 0.25]
    ensemble = trainer.emotion_reward
    assert isinstance(ensemble, EmotionRMEnsemble) and len(ensemble.members) == 2
    assert (ensemble.aggregation, ensemble.std_coef, ensemble.adv_alpha) == ("mean_minus_std", 0.5, 0.5)
    assert trainer.args.reward_gate == "asr" and trainer.args.reward_gate_threshold == -7.5
    logged = [entry for entry in trainer.state.log_history if "rewards/asr/mean" in entry]
    assert len(logged) == 2 and all("gate_weight" in entry for entry in logged)
    assert (tmp_path / "out" / "config.json").is_file()


def test_recipe_with_several_rewards_parses_and_flags_override_it():
    recipe = os.path.join(REPO, "recipes", "toy", "rrpo_multi_reward.yaml")
    _, (script_args, training_args, _) = run_example(["--config", recipe])
    assert script_args.reward_model_path == "outputs/reward_model"
    assert script_args.ensemble_reward_model_paths == ["outputs/reward_model_base"]
    assert script_args.reward_funcs == ["outputs/multitask_rm"]
    assert training_args.reward_weights == [1.0, 0.5, 0.2]
    assert training_args.reward_aggregation == "min"
    assert (training_args.reward_gate, training_args.reward_gate_threshold) == ("asr", -1.5)
    assert training_args.reward_gate_temperature == 0.0

    _, (script_args, training_args, _) = run_example(
        ["--config", recipe, "--reward_weights", "1", "0", "0", "--reward_gate_threshold", "-2.5"]
    )
    assert training_args.reward_weights == [1.0, 0.0, 0.0] and training_args.reward_gate_threshold == -2.5
    # Without the flags, the script's defaults: one emotion reward model, nothing else.
    _, (script_args, training_args, _) = run_example(["--dataset_name", "org/data", "--output_dir", "o"])
    assert script_args.ensemble_reward_model_paths is None and script_args.reward_funcs is None
    assert training_args.reward_weights is None and training_args.reward_gate is None


# ------------------------------------------------------------------------------------------------ toy run: CER


def train_asr_head(corpus, steps=250):  # noqa: F811
    """A multi-task RM whose ASR head reads the testbed (≈ 3% CER after 250 steps); its emotion head is untrained."""
    from rrpo_hf.data.padding import right_pad

    torch.manual_seed(0)
    config = RobustMultiTaskRMConfig(
        vocab_size=CODEBOOK,
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
        tasks=["emotion", "asr"],
        asr_labels=asr_vocabulary(),
        hidden_dropout_prob=0.0,
        attention_dropout=0.0,
    )
    model = RobustSERForMultiTaskReward(config)
    rows = corpus["train"]
    speech, texts = [list(tokens) for tokens in rows["speech_tokens"]], list(rows["text"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = torch.randperm(len(speech), generator=generator)[:32].tolist()
        ids, mask = right_pad([speech[i] for i in batch], 0, "cpu")
        targets, lengths = model.encode_asr_targets([texts[i] for i in batch])
        loss = model(input_ids=ids, attention_mask=mask, asr_targets=targets, asr_target_lengths=lengths).asr_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def sft_policy(tokenizer, corpus, steps=300):  # noqa: F811
    """A 2-layer toy policy teacher-forced on the corpus: it speaks, with many content errors (CER ≈ 0.7)."""
    from rrpo_hf.models.cosyvoice2 import CosyVoice2LM, CosyVoice2LMConfig
    from rrpo_hf.trainers import build_cosyvoice2_sft_collator

    torch.manual_seed(0)
    llm_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    policy = CosyVoice2LM(CosyVoice2LMConfig(llm_config=llm_config, speech_token_size=CODEBOOK))
    collate = build_cosyvoice2_sft_collator(tokenizer, policy.config, corpus["train"].features["emotion"])
    rows = [corpus["train"][i] for i in range(len(corpus["train"]))]
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    policy.train()
    for _ in range(steps):
        batch = torch.randperm(len(rows), generator=generator)[:16].tolist()
        loss = policy(**collate([rows[i] for i in batch])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return policy


@pytest.mark.slow
def test_optimising_the_asr_reward_lowers_the_oracle_cer(tmp_path, tokenizer):  # noqa: F811
    """Seeded toy run: DiffRO on the ASR reward of a multi-task RM lowers the oracle CER of generated speech.

    The control run has the same steps, KL and samples with the ASR weight moved to the (untrained, so
    content-blind) emotion head: the CER drop must come from the ASR reward, not from training as such. A small
    learning rate and β = 1 keep the policy near its start: with larger steps offline DiffRO exploits the ASR head
    (under teacher forcing, repeating the previous unit reads as well as saying the next one, and free-running
    generation then stalls), and the CER rises instead.
    """
    from rrpo_hf.testbed import Oracle, OracleScorer, TestbedConfig, make_emotion_corpus

    toy = make_emotion_corpus(language="alpha", num_train=256, num_test=128, codebook_size=CODEBOOK, seed=0)
    reward_model = train_asr_head(toy)
    start = sft_policy(tokenizer, toy)

    def run(weights):
        args = make_args(
            tmp_path,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=64,
            learning_rate=1e-3,
            lr_scheduler_type="constant",
            max_steps=60,
            logging_steps=60,
            beta=1.0,
            reward_adv_alpha=0.0,
            reward_weights=weights,
            max_new_tokens=120,
            disable_tqdm=True,
        )
        trainer = DiffROTrainer(
            copy.deepcopy(start),
            reward_model=None,
            reward_funcs=[reward_model],  # its emotion head is the emotion reward, its ASR head "asr"
            args=args,
            train_dataset=toy["train"],
            eval_dataset=toy["test"],
            processing_class=tokenizer,
            eval_scorers=[OracleScorer(Oracle(TestbedConfig(codebook_size=CODEBOOK)))],
        )
        assert trainer.reward_func_names == ["emotion", "asr"]
        before = trainer.evaluate(metric_key_prefix="before")["before_oracle_cer"]
        trainer.train()
        return before, trainer.evaluate()["eval_oracle_cer"]

    before, with_asr = run([0.0, 1.0])
    _, control = run([1.0, 0.0])
    assert math.isfinite(before) and before > 0.3  # the starting policy makes many content errors
    assert with_asr < before - 0.04, (before, with_asr, control)
    assert with_asr < control - 0.03, (before, with_asr, control)
