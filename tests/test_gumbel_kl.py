"""Straight-through Gumbel-Softmax and token-level KL (rrpo_hf.ops.gumbel / rrpo_hf.ops.kl)."""

import pytest
import torch
import torch.nn.functional as F

from rrpo_hf.ops import (
    gumbel_softmax_sample,
    masked_mean,
    sample_gumbel_noise,
    sequence_kl,
    soft_token_embedding,
    token_entropy,
    token_level_kl,
)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_straight_through_forward_is_one_hot_and_gradient_is_the_relaxed_one(temperature):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7, requires_grad=True)
    noise = sample_gumbel_noise(logits.shape, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(3, 5, 7)
    sample, ids = gumbel_softmax_sample(logits, temperature=temperature, gumbel_noise=noise)
    assert torch.equal(ids, (logits + noise).argmax(-1))
    assert torch.equal(sample.detach(), F.one_hot(ids, 7).float())
    (sample * weights).sum().backward()
    # d<w, y>/dz = (1/τ) s ⊙ (w - <s, w>) with s = softmax((z + g)/τ): the Jacobian of the relaxed sample.
    soft = torch.softmax((logits.detach() + noise) / temperature, dim=-1)
    expected = soft * (weights - (soft * weights).sum(-1, keepdim=True)) / temperature
    torch.testing.assert_close(logits.grad, expected, rtol=1e-5, atol=1e-6)


def test_relaxed_mode_returns_the_soft_sample():
    logits = torch.randn(2, 4, 6)
    noise = sample_gumbel_noise(logits.shape, generator=torch.Generator().manual_seed(3))
    sample, _ = gumbel_softmax_sample(logits, temperature=0.7, straight_through=False, gumbel_noise=noise)
    torch.testing.assert_close(sample, torch.softmax((logits + noise) / 0.7, -1))
    torch.testing.assert_close(sample.sum(-1), torch.ones(2, 4))


def test_samples_follow_the_softmax_distribution_and_are_seeded():
    logits = torch.tensor([2.0, 0.5, -1.0, 0.0]).expand(20000, 4)
    _, ids_a = gumbel_softmax_sample(logits, generator=torch.Generator().manual_seed(7))
    _, ids_b = gumbel_softmax_sample(logits, generator=torch.Generator().manual_seed(7))
    _, ids_c = gumbel_softmax_sample(logits, generator=torch.Generator().manual_seed(8))
    assert torch.equal(ids_a, ids_b) and not torch.equal(ids_a, ids_c)
    frequencies = torch.bincount(ids_a, minlength=4).float() / ids_a.numel()
    torch.testing.assert_close(frequencies, torch.softmax(logits[0], -1), atol=0.015, rtol=0)


def test_gumbel_rejects_bad_arguments():
    with pytest.raises(ValueError, match="temperature must be positive"):
        gumbel_softmax_sample(torch.randn(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="must match logits"):
        gumbel_softmax_sample(torch.randn(2, 3), gumbel_noise=torch.randn(2, 4))


def test_soft_token_embedding_of_one_hots_is_a_lookup_and_checks_rows():
    weight = torch.randn(10, 4)  # 8 codebook rows + 2 special rows
    ids = torch.tensor([[0, 7, 3]])
    torch.testing.assert_close(soft_token_embedding(F.one_hot(ids, 8).float(), weight), weight[ids])
    with pytest.raises(ValueError, match="fewer rows"):
        soft_token_embedding(torch.rand(1, 2, 12), weight)


def test_kl_is_zero_for_identical_policies_and_matches_the_definition():
    torch.manual_seed(0)
    policy = torch.randn(2, 5, 9, requires_grad=True)
    assert token_level_kl(policy, policy.detach().clone()).item() == pytest.approx(0.0, abs=1e-6)
    reference = torch.randn(2, 5, 9)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    per_position = F.kl_div(reference.log_softmax(-1), policy.log_softmax(-1), log_target=True, reduction="none").sum(
        -1
    )
    kl = token_level_kl(policy, reference, mask)
    torch.testing.assert_close(kl, per_position[mask].mean())
    assert kl.item() > 0
    torch.testing.assert_close(token_level_kl(policy, reference, mask, reduction="none"), per_position * mask)
    kl.backward()
    assert policy.grad[0, 3:].abs().max() == 0  # masked positions get no gradient
    assert policy.grad[0, :3].abs().max() > 0


def test_kl_and_entropy_validate_inputs():
    with pytest.raises(ValueError, match="differ"):
        token_level_kl(torch.randn(2, 3, 4), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="selects no position"):
        masked_mean(torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    uniform = torch.zeros(2, 3, 8)
    torch.testing.assert_close(token_entropy(uniform), torch.log(torch.tensor(8.0)))


def test_sequence_kl_sums_the_per_step_kl_over_each_sequence():
    # KL([1/2, 1/2] || [1/4, 3/4]) = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3) at every step.
    policy = torch.tensor([0.5, 0.5]).log().expand(2, 5, 2)
    reference = torch.tensor([0.25, 0.75]).log().expand(2, 5, 2)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    step = 0.5 * torch.log(torch.tensor(4.0 / 3.0))
    torch.testing.assert_close(sequence_kl(policy, reference, mask), torch.stack([3 * step, 5 * step]))
    assert sequence_kl(policy, policy.clone(), mask).abs().max() == 0
    with pytest.raises(ValueError, match="batch, positions"):
        sequence_kl(policy, reference, mask.flatten())


def test_mean_sequence_kl_over_policy_samples_is_the_exact_kl_of_the_autoregressive_distributions():
    """A two-step toy with an end token, so sequences have different lengths: KL(pi || ref) by enumeration."""
    torch.manual_seed(0)
    vocab, end = 3, 0
    first_policy, first_reference = torch.randn(vocab), torch.randn(vocab)
    second_policy, second_reference = torch.randn(vocab, vocab), torch.randn(vocab, vocab)  # row: the first token

    # Every sequence: (end,) stops after one token; (a, b) with a != end has two tokens (the second step is the last).
    sequences = [(end,)] + [(a, b) for a in range(vocab) if a != end for b in range(vocab)]

    def log_prob(first, second, seq):
        second_step = second[seq[0]].log_softmax(-1)[seq[1]] if len(seq) == 2 else 0.0
        return first.log_softmax(-1)[seq[0]] + second_step

    def log_pi(seq):
        return log_prob(first_policy, second_policy, seq)

    def log_ref(seq):
        return log_prob(first_reference, second_reference, seq)

    weights = torch.stack([log_pi(seq).exp() for seq in sequences])
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    exact = sum(weight * (log_pi(seq) - log_ref(seq)) for weight, seq in zip(weights, sequences))

    # Teacher-forced logits along each sequence: position t holds the distribution that predicts token t.
    policy_logits = torch.stack([torch.stack([first_policy, second_policy[seq[0]]]) for seq in sequences])
    reference_logits = torch.stack([torch.stack([first_reference, second_reference[seq[0]]]) for seq in sequences])
    mask = torch.tensor([[True, len(seq) == 2] for seq in sequences])
    estimate = sequence_kl(policy_logits, reference_logits, mask)
    assert (estimate >= 0).all()
    torch.testing.assert_close((weights * estimate).sum(), exact)
    assert exact > 0
