"""The reward's Gumbel sample drawn from the rollout's nucleus (ops.nucleus_logits, DiffROConfig.gumbel_sampling)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rrpo_hf.models.cosyvoice2 import CosyVoice2LM, CosyVoice2LMConfig
from rrpo_hf.models.cosyvoice2.generation import ras_sampling
from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
from rrpo_hf.ops import gumbel_softmax_sample, nucleus_logits, sample_gumbel_noise
from rrpo_hf.testbed import build_testbed_tokenizer, make_emotion_corpus
from rrpo_hf.trainers import DiffROConfig, DiffROTrainer


def _hand_nucleus(probs: list[float], top_p: float, top_k: int) -> set[int]:
    """CosyVoice2's rule written out: walk the ids by decreasing probability, take one while fewer than top_k are
    taken and the mass taken so far is below top_p (the first always)."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, mass = [], 0.0
    for i in order:
        if kept and (len(kept) >= top_k or mass >= top_p):
            break
        kept.append(i)
        mass += probs[i]
    return set(kept)


@pytest.mark.parametrize("top_p, top_k", [(0.8, 25), (0.5, 3), (1.0, 4), (0.01, 10), (0.9, 1)])
def test_nucleus_keeps_exactly_the_ids_of_cosyvoice2s_rule(top_p, top_k):
    torch.manual_seed(0)
    logits = torch.randn(6, 40) * 2.0
    truncated = nucleus_logits(logits, top_p=top_p, top_k=top_k)
    for row in range(logits.shape[0]):
        probs = torch.softmax(logits[row], -1).tolist()
        kept = set(torch.isfinite(truncated[row]).nonzero().flatten().tolist())
        assert kept == _hand_nucleus(probs, top_p, top_k)
        assert torch.equal(truncated[row][list(kept)], logits[row][list(kept)])  # kept logits are untouched


def test_the_rollouts_sampler_only_draws_from_the_nucleus():
    torch.manual_seed(1)
    logits = (torch.randn(4, 64) * 1.5).repeat(500, 1)  # 500 draws from each of 4 distributions
    allowed = torch.isfinite(nucleus_logits(logits, top_p=0.8, top_k=25))
    drawn = ras_sampling(logits, top_p=0.8, top_k=25, generator=torch.Generator().manual_seed(0))
    assert allowed[torch.arange(len(logits)), drawn].all()
    # and it does draw the whole nucleus, not a subset of it
    for row in range(4):
        assert set(drawn[row::4].tolist()) == set(allowed[row].nonzero().flatten().tolist())


def test_truncated_sample_never_leaves_the_nucleus_and_follows_its_renormalised_probabilities():
    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -0.5, -1.0, -3.0, -3.5]).expand(40000, 8)
    truncated = nucleus_logits(logits, top_p=0.8, top_k=25)
    kept = torch.isfinite(truncated[0])
    assert kept.tolist() == [True, True, True, False, False, False, False, False]
    _, ids = gumbel_softmax_sample(truncated, generator=torch.Generator().manual_seed(0))
    assert kept[ids].all()
    frequencies = torch.bincount(ids, minlength=8).float() / ids.numel()
    expected = torch.softmax(truncated[0], -1)  # the nucleus's probabilities renormalised, 0 elsewhere
    torch.testing.assert_close(frequencies, expected, atol=0.01, rtol=0)
    # the full softmax draws the tail as well
    _, full_ids = gumbel_softmax_sample(logits, generator=torch.Generator().manual_seed(0))
    assert not kept[full_ids].all()


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.0])
def test_gradient_reaches_the_nucleus_logits_only_and_scales_with_one_over_tau(temperature):
    torch.manual_seed(2)
    logits = torch.randn(3, 5, 12, requires_grad=True)
    weights = torch.randn(3, 5, 12)
    noise = sample_gumbel_noise(logits.shape, generator=torch.Generator().manual_seed(3))
    truncated = nucleus_logits(logits, top_p=0.7, top_k=4)
    kept = torch.isfinite(truncated.detach())
    sample, ids = gumbel_softmax_sample(truncated, temperature=temperature, gumbel_noise=noise)
    assert torch.equal(sample.detach(), F.one_hot(ids, 12).float())
    assert kept.gather(-1, ids[..., None]).all()
    (sample * weights).sum().backward()
    # the relaxed sample's Jacobian over the nucleus: (1/τ) s ⊙ (w − <s, w>), s = softmax((z̃ + g)/τ), z̃ = -inf outside
    soft = torch.softmax((truncated.detach() + noise) / temperature, dim=-1)
    expected = soft * (weights - (soft * weights).sum(-1, keepdim=True)) / temperature
    torch.testing.assert_close(logits.grad, expected, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(logits.grad).all() and (logits.grad[~kept] == 0).all()
    assert logits.grad[kept].abs().max() > 0


def test_tau_shapes_the_relaxation_but_not_the_drawn_id():
    torch.manual_seed(4)
    logits = torch.randn(2, 6, 30)
    noise = sample_gumbel_noise(logits.shape, generator=torch.Generator().manual_seed(5))
    truncated = nucleus_logits(logits, top_p=0.8, top_k=25)
    draws = [gumbel_softmax_sample(truncated, temperature=t, gumbel_noise=noise)[1] for t in (0.1, 1.0, 5.0)]
    assert all(torch.equal(draws[0], other) for other in draws[1:])
    relaxed = {
        t: gumbel_softmax_sample(truncated, temperature=t, straight_through=False, gumbel_noise=noise)[0]
        for t in (0.05, 1.0, 5.0)
    }
    for t, soft in relaxed.items():
        torch.testing.assert_close(soft, torch.softmax((truncated + noise) / t, -1))
        assert (soft[~torch.isfinite(truncated)] == 0).all()  # no mass outside the nucleus at any τ
    # small τ: nearly the one-hot of the drawn id; large τ: spread over the nucleus
    assert (relaxed[0.05].max(-1).values > 0.9).float().mean() > 0.9
    assert relaxed[5.0].max(-1).values.mean() < relaxed[1.0].max(-1).values.mean()


def test_nucleus_rejects_bad_arguments():
    with pytest.raises(ValueError, match="top_p"):
        nucleus_logits(torch.randn(2, 5), top_p=0.0, top_k=3)
    with pytest.raises(ValueError, match="top_k"):
        nucleus_logits(torch.randn(2, 5), top_p=0.8, top_k=0)
    with pytest.raises(ValueError, match="gumbel_sampling"):
        DiffROConfig(output_dir="unused", gumbel_sampling="nucleus", report_to="none")


# ------------------------------------------------------------------------------------------- in the trainer

CODEBOOK = 512


@pytest.fixture(scope="module")
def corpus():
    return make_emotion_corpus(language="alpha", num_train=16, num_test=4, codebook_size=CODEBOOK, seed=0)


def _trainer(tmp_path, corpus, **overrides):
    tokenizer = build_testbed_tokenizer()
    torch.manual_seed(0)
    policy = CosyVoice2LM(
        CosyVoice2LMConfig(
            llm_config=dict(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=1,
                max_position_embeddings=512,
                tie_word_embeddings=False,
            ),
            speech_token_size=CODEBOOK,
        )
    )
    torch.manual_seed(1)
    reward_model = RobustSERForAudioClassification(
        RobustSERConfig(
            vocab_size=CODEBOOK,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=256,
        )
    )
    args = DiffROConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        beta=0.0,
        reward_adv_alpha=0.0,
        **overrides,
    )
    return DiffROTrainer(
        model=policy, reward_model=reward_model, args=args, train_dataset=corpus["train"], processing_class=tokenizer
    )


def _step(trainer):
    """One loss on the first batch: the policy's codebook logits (with their gradient), the noise state it used,
    and the step's outputs."""
    model = trainer.model
    model.train()
    captured = {}

    def keep_logits(module, inputs, output):
        output.retain_grad()
        captured["z"] = output

    hook = model.llm_decoder.register_forward_hook(keep_logits)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    noise_state = trainer._gumbel_generator.get_state()
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    hook.remove()
    loss.backward()
    width = batch["speech_ids"].shape[1]
    return captured["z"], width, noise_state, outputs, batch


def test_default_sampling_is_the_full_softmax_bit_for_bit(tmp_path, corpus):
    trainer = _trainer(tmp_path, corpus)
    assert trainer.args.gumbel_sampling == "full"
    logits, width, noise_state, outputs, _ = _step(trainer)
    replay = torch.Generator().manual_seed(0)
    replay.set_state(noise_state)
    samples, ids = gumbel_softmax_sample(logits.detach()[:, :width, :CODEBOOK], generator=replay)
    assert torch.equal(outputs["sampled_ids"], ids) and torch.equal(outputs["samples"].detach(), samples)


def test_rollout_sampling_reads_nucleus_tokens_and_trains_their_logits(tmp_path, corpus):
    trainer = _trainer(tmp_path, corpus, gumbel_sampling="rollout", top_p=0.8, top_k=5)
    logits, width, noise_state, outputs, batch = _step(trainer)
    codebook_logits = logits.detach()[:, :width, :CODEBOOK]
    kept = torch.isfinite(nucleus_logits(codebook_logits, top_p=0.8, top_k=5))
    assert kept.sum(-1).max() <= 5
    assert kept.gather(-1, outputs["sampled_ids"][..., None]).all()  # every token the reward read
    replay = torch.Generator().manual_seed(0)
    replay.set_state(noise_state)
    _, ids = gumbel_softmax_sample(codebook_logits, generator=replay)
    assert not kept.gather(-1, ids[..., None]).all()  # the same noise on the full softmax leaves the nucleus
    grad = logits.grad[:, :width, :CODEBOOK]
    mask = batch["speech_attention_mask"].bool()
    assert torch.isfinite(logits.grad).all()
    assert (grad[~kept] == 0).all() and grad[mask].abs().max() > 0


# ------------------------------------------------------------------------------------------- the study's row


def test_study_row_diffro_nucleus_trains_with_the_rollouts_nucleus_and_is_in_no_preset(monkeypatch, tmp_path):
    from rrpo_hf.study import POLICY_METHODS, SAMPLING_DESCRIPTIONS, STUDY_PRESETS, RewardHackingStudyConfig, stages
    from rrpo_hf.study.report import format_sampling_rows

    built = {}

    class Stop(Exception):
        pass

    def capture(**kwargs):
        built.update(kwargs)
        raise Stop

    monkeypatch.setattr(stages, "DiffROTrainer", capture)
    config = RewardHackingStudyConfig(policy_methods=["DiffRO", "DiffRO-nucleus"], beta_sweep=[])
    for method, expected in (("DiffRO", "full"), ("DiffRO-nucleus", "rollout")):
        with pytest.raises(Stop):
            stages.optimize_policy(config, method, None, None, "rm", [], [], None, 0, str(tmp_path))
        assert built["args"].gumbel_sampling == expected
        assert built["reward_model"] == "rm" and built["args"].reward_adv_alpha == 0.0  # DiffRO's reward otherwise
    assert POLICY_METHODS["DiffRO-nucleus"].rm_variant == "base"
    for preset in STUDY_PRESETS:
        assert "DiffRO-nucleus" not in RewardHackingStudyConfig.from_preset(preset).policy_rows()
    lines = format_sampling_rows(config)
    assert lines[0] == "### What the reward reads" and SAMPLING_DESCRIPTIONS["DiffRO-nucleus"] in lines[2]
    assert lines[4].startswith("**Prediction (written before its first run).**")
    assert format_sampling_rows(RewardHackingStudyConfig()) == []
