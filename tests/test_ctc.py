"""rrpo_hf.ops.ctc: the CTC log-likelihood against brute-force enumeration and `F.ctc_loss`, greedy decoding."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from rrpo_hf.ops import ctc_greedy_decode, ctc_log_likelihood, ctc_min_input_lengths


def collapse(path, blank=0):
    """B: merge repeats, then drop blanks."""
    merged = [c for i, c in enumerate(path) if i == 0 or path[i - 1] != c]
    return [c for c in merged if c != blank]


def brute_force_log_likelihood(log_probs, target, blank=0):
    """log sum over every path of T classes that collapses to `target` of prod_t p_t(path_t)."""
    num_frames, num_classes = log_probs.shape
    terms = [
        sum(log_probs[t, c] for t, c in enumerate(path))
        for path in itertools.product(range(num_classes), repeat=num_frames)
        if collapse(path, blank) == list(target)
    ]
    return torch.logsumexp(torch.stack(terms), 0) if terms else torch.tensor(float("-inf"))


def hand_built_case():
    """Four utterances: a repeat needing a blank, an infeasible repeat run, a single symbol, a too-short input."""
    torch.manual_seed(0)
    logits = torch.randn(4, 9, 5)
    targets = torch.tensor([[1, 2, 2, 0], [3, 3, 3, 3], [1, 0, 0, 0], [4, 1, 2, 3]])
    target_lengths = torch.tensor([3, 4, 1, 4])
    input_lengths = torch.tensor([9, 6, 9, 3])
    return logits, input_lengths, targets, target_lengths


def test_equals_torch_ctc_loss_value_and_gradient():
    logits, input_lengths, targets, target_lengths = hand_built_case()
    logits.requires_grad_(True)
    ours = ctc_log_likelihood(logits.log_softmax(-1), input_lengths, targets, target_lengths)
    reference = -F.ctc_loss(
        logits.log_softmax(-1).transpose(0, 1), targets, input_lengths, target_lengths, reduction="none"
    )
    assert ours.shape == (4,)
    assert torch.allclose(ours[[0, 2]], reference[[0, 2]], atol=1e-5)
    # Samples 1 (7 frames needed, 6 given) and 3 (4 symbols in 3 frames) are infeasible: log P = -inf, like torch.
    assert torch.isinf(ours[[1, 3]]).all() and torch.isinf(reference[[1, 3]]).all()

    feasible = ctc_log_likelihood(logits.log_softmax(-1), input_lengths, targets, target_lengths, zero_infinity=True)
    assert torch.equal(feasible[[1, 3]], torch.zeros(2))
    (ours_grad,) = torch.autograd.grad(feasible.sum(), logits)
    torch_value = -F.ctc_loss(
        logits.log_softmax(-1).transpose(0, 1),
        targets,
        input_lengths,
        target_lengths,
        reduction="none",
        zero_infinity=True,
    )
    (torch_grad,) = torch.autograd.grad(torch_value.sum(), logits)
    assert torch.allclose(ours_grad, torch_grad, atol=1e-5)
    assert torch.isfinite(ours_grad).all() and ours_grad[[1, 3]].abs().max() == 0


def test_matches_brute_force_enumeration_for_any_log_probs():
    """Unnormalised inputs too: the recursion is plain autograd, so its gradient is the true one."""
    torch.manual_seed(1)
    raw = torch.randn(5, 3, dtype=torch.float64)
    for target in ([1, 2], [1, 1], [2], []):
        value = ctc_log_likelihood(
            raw[None].float(),
            torch.tensor([5]),
            torch.tensor([target + [0] * (2 - len(target))]),
            torch.tensor([len(target)]),
        )
        assert value.item() == pytest.approx(brute_force_log_likelihood(raw, target).item(), rel=1e-5)

    probe = raw.float().requires_grad_(True)
    (ours,) = torch.autograd.grad(
        ctc_log_likelihood(probe[None], torch.tensor([5]), torch.tensor([[1, 2]]), torch.tensor([2])).sum(), probe
    )
    probe_reference = raw.float().requires_grad_(True)
    (reference,) = torch.autograd.grad(brute_force_log_likelihood(probe_reference, [1, 2]), probe_reference)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_padded_frames_and_target_padding_are_ignored():
    torch.manual_seed(2)
    log_probs = torch.randn(1, 6, 4).log_softmax(-1)
    alone = ctc_log_likelihood(log_probs, torch.tensor([6]), torch.tensor([[1, 3]]), torch.tensor([2]))
    padded_frames = torch.cat([log_probs, torch.randn(1, 5, 4).log_softmax(-1)], dim=1)
    padded = ctc_log_likelihood(padded_frames, torch.tensor([6]), torch.tensor([[1, 3, 2, 2]]), torch.tensor([2]))
    assert torch.allclose(alone, padded)


def test_min_input_lengths_count_a_blank_between_repeats():
    targets = torch.tensor([[1, 1, 2, 2], [1, 2, 3, 0], [4, 4, 4, 9]])
    assert ctc_min_input_lengths(targets, torch.tensor([4, 3, 3])).tolist() == [6, 3, 5]


def test_empty_target_is_the_all_blank_path():
    log_probs = torch.randn(1, 4, 3).log_softmax(-1)
    value = ctc_log_likelihood(log_probs, torch.tensor([4]), torch.zeros(1, 0, dtype=torch.long), torch.tensor([0]))
    assert value.item() == pytest.approx(log_probs[0, :, 0].sum().item(), rel=1e-6)


def test_greedy_decode_collapses_repeats_and_drops_blanks():
    best = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 3], [2, 0, 2, 2, 1, 1, 1, 1]])
    logits = F.one_hot(best, 4).float()
    assert ctc_greedy_decode(logits, torch.tensor([8, 4])) == [[1, 1, 2, 3], [2, 2]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(targets=torch.tensor([[0, 1]])), "other than the blank"),
        (dict(targets=torch.tensor([[1, 7]])), r"ids in \[0, 4\)"),
        (dict(input_lengths=torch.tensor([9])), r"input_lengths` must lie in \[0, 5\]"),
        (dict(log_probs=torch.zeros(5, 4)), "batch, frames, classes"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, message):
    values = dict(
        log_probs=torch.zeros(1, 5, 4).log_softmax(-1),
        input_lengths=torch.tensor([5]),
        targets=torch.tensor([[1, 2]]),
        target_lengths=torch.tensor([2]),
    )
    values.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ctc_log_likelihood(**values)


def test_uniform_frames_give_the_counted_alignments():
    """With p_t(c) = 1/C everywhere, P(y) = (#alignments of y in T frames) / C^T."""
    num_frames, num_classes = 4, 3
    log_probs = torch.full((1, num_frames, num_classes), -math.log(num_classes))
    alignments = sum(collapse(path) == [1, 2] for path in itertools.product(range(num_classes), repeat=num_frames))
    value = ctc_log_likelihood(log_probs, torch.tensor([num_frames]), torch.tensor([[1, 2]]), torch.tensor([2]))
    assert value.item() == pytest.approx(math.log(alignments) - num_frames * math.log(num_classes), rel=1e-6)
