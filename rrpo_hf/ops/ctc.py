"""Connectionist Temporal Classification (CTC): the ASR head of the multi-task reward model (DiffRO, arXiv 2507.05911).

DiffRO's ASR reward is ``R_ASR = log P_ASR(text | tokens)``. With a frame-wise head emitting ``C`` classes (class
``blank`` plus one per symbol) over ``T`` frames,

    ``P(y | x) = sum over alignments a in B^-1(y) of prod_t p_t(a_t)``,

where ``B`` collapses repeated classes and then removes blanks. :func:`ctc_log_likelihood` computes ``log P(y | x)``
with the forward (alpha) recursion over the blank-extended target ``y' = (blank, y_1, blank, ..., y_U, blank)``:

    ``alpha_t(s) = logsumexp(alpha_{t-1}(s), alpha_{t-1}(s-1), [alpha_{t-1}(s-2) if y'_s != blank, y'_s != y'_{s-2}])
    + log p_t(y'_s)``,  ``log P = logsumexp(alpha_{T-1}(2U), alpha_{T-1}(2U-1))``.

It is written out here (rather than calling ``F.ctc_loss``) because the reward back-propagates into the policy:
the recursion is plain autograd, so the gradient is exact for any ``log_probs`` (PyTorch's CTC kernel returns the
gradient as if ``log_probs`` came straight out of a ``log_softmax``) and twice differentiable. Its value equals
``-F.ctc_loss(..., reduction="none")`` (``tests/test_ctc.py``).

Only ``torch`` is imported here: this module is copied next to the reward model's modeling file when the model is
saved, so that the checkpoint loads with ``trust_remote_code=True`` without rrpo-hf installed.
"""

from __future__ import annotations

import torch


def ctc_min_input_lengths(targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """Fewest frames any alignment of each target needs: ``U + #{u : y_u = y_{u-1}}`` (a repeat needs a blank between).

    ``targets`` ``(B, U_max)`` padded, ``target_lengths`` ``(B,)``; returns ``(B,)`` long.
    """
    targets, target_lengths = targets.long(), target_lengths.long()
    if targets.shape[1] < 2:
        return target_lengths.clone()
    positions = torch.arange(1, targets.shape[1], device=targets.device)
    repeats = (targets[:, 1:] == targets[:, :-1]) & (positions[None, :] < target_lengths[:, None])
    return target_lengths + repeats.sum(dim=1)


def ctc_log_likelihood(
    log_probs: torch.Tensor,
    input_lengths: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    zero_infinity: bool = False,
) -> torch.Tensor:
    """Per-sample CTC log-likelihood ``log P(target | frames)``, the negation of ``F.ctc_loss(reduction="none")``.

    Args:
        log_probs: ``(B, T, C)`` frame-wise log-probabilities, **batch first** (``log_softmax`` of the head's
            logits). Computed in float32.
        input_lengths: ``(B,)`` valid frames per sample (``attention_mask.sum(1)``); frames past it are ignored.
        targets: ``(B, U_max)`` class ids in ``[0, C)`` other than ``blank``, right-padded (padding is ignored).
        target_lengths: ``(B,)`` symbols per target; ``0`` gives the probability of all-blank frames.
        blank: the blank class.
        zero_infinity: what an *infeasible* sample gets, one whose target needs more frames than it has
            (:func:`ctc_min_input_lengths`; P = 0 exactly). ``False`` (default): ``-inf``, its true value, so a
            caller cannot mistake it for a likely transcript. ``True``: ``0`` with zero gradient, as
            ``F.ctc_loss(zero_infinity=True)`` does. Either way no NaN reaches the gradient of the other samples.

    Returns:
        ``(B,)`` float32 log-likelihoods (``<= 0``).
    """
    if log_probs.dim() != 3:
        raise ValueError(f"`log_probs` must be (batch, frames, classes), got shape {tuple(log_probs.shape)}.")
    batch_size, num_frames, num_classes = log_probs.shape
    if targets.dim() != 2 or targets.shape[0] != batch_size:
        raise ValueError(
            f"`targets` must be padded (batch={batch_size}, max_target_length), got shape {tuple(targets.shape)}."
        )
    if input_lengths.shape != (batch_size,) or target_lengths.shape != (batch_size,):
        raise ValueError(
            f"`input_lengths` and `target_lengths` must have shape ({batch_size},), got "
            f"{tuple(input_lengths.shape)} and {tuple(target_lengths.shape)}."
        )
    if not 0 <= blank < num_classes:
        raise ValueError(f"blank={blank} is not a class of the {num_classes} in `log_probs`.")
    device = log_probs.device
    input_lengths = input_lengths.to(device).long()
    target_lengths = target_lengths.to(device).long()
    targets = targets.to(device).long()
    max_target = targets.shape[1]
    if bool((input_lengths < 0).any() | (input_lengths > num_frames).any()):
        raise ValueError(f"`input_lengths` must lie in [0, {num_frames}] (the frames of `log_probs`).")
    if bool((target_lengths < 0).any() | (target_lengths > max_target).any()):
        raise ValueError(f"`target_lengths` must lie in [0, {max_target}] (the width of `targets`).")
    symbol_valid = torch.arange(max_target, device=device)[None, :] < target_lengths[:, None]
    bad = symbol_valid & ((targets < 0) | (targets >= num_classes) | (targets == blank))
    if bool(bad.any()):
        sample, position = bad.nonzero()[0].tolist()
        raise ValueError(
            f"Target {sample} has class {targets[sample, position].item()} at position {position}; targets must be "
            f"ids in [0, {num_classes}) other than the blank ({blank})."
        )

    log_probs = log_probs.float()
    # The blank-extended target y' (B, S = 2U + 1): blanks at even positions, symbols at odd ones.
    num_states = 2 * max_target + 1
    extended = torch.full((batch_size, num_states), blank, dtype=torch.long, device=device)
    extended[:, 1::2] = targets.masked_fill(~symbol_valid, blank)
    state_valid = torch.arange(num_states, device=device)[None, :] < (2 * target_lengths + 1)[:, None]
    # A skip s-2 -> s is allowed into a symbol that differs from the symbol two states back.
    can_skip = torch.zeros_like(state_valid)
    can_skip[:, 2:] = (extended[:, 2:] != blank) & (extended[:, 2:] != extended[:, :-2])

    # A large finite floor instead of -inf: logsumexp over all -inf inputs has a NaN gradient. Infeasible samples
    # (the only ones whose value stays at the floor) are found combinatorially and replaced at the end.
    floor = torch.finfo(torch.float32).min / 4
    emissions = log_probs.gather(2, extended[:, None, :].expand(batch_size, num_frames, num_states))
    emissions = emissions.masked_fill(~state_valid[:, None, :], floor)

    alpha = torch.full((batch_size, num_states), floor, device=device)
    alpha[:, 0] = emissions[:, 0, 0] if num_frames else floor
    if num_states > 1 and num_frames:
        alpha[:, 1] = torch.where(target_lengths > 0, emissions[:, 0, 1], torch.full_like(alpha[:, 1], floor))
    floor_column = torch.full((batch_size, 1), floor, device=device)
    for t in range(1, num_frames):
        stay = alpha
        step = torch.cat([floor_column, alpha[:, :-1]], dim=1)
        skip = torch.cat([floor_column, floor_column, alpha[:, :-2]], dim=1)[:, :num_states]
        skip = skip.masked_fill(~can_skip, floor)
        advanced = torch.logsumexp(torch.stack([stay, step, skip]), dim=0) + emissions[:, t]
        # Samples with fewer frames keep their alpha from their last valid frame.
        alpha = torch.where((t < input_lengths)[:, None], advanced, alpha)

    last_blank = alpha.gather(1, (2 * target_lengths)[:, None]).squeeze(1)
    last_symbol = alpha.gather(1, (2 * target_lengths - 1).clamp_min(0)[:, None]).squeeze(1)
    last_symbol = torch.where(target_lengths > 0, last_symbol, torch.full_like(last_symbol, floor))
    log_likelihood = torch.logaddexp(last_blank, last_symbol)

    # No frames: the empty target is certain (log 1 = 0); any other is infeasible, caught below.
    log_likelihood = torch.where(input_lengths == 0, torch.zeros_like(log_likelihood), log_likelihood)
    infeasible = input_lengths < ctc_min_input_lengths(targets, target_lengths)
    replacement = 0.0 if zero_infinity else float("-inf")
    return torch.where(infeasible, torch.full_like(log_likelihood, replacement), log_likelihood)


def ctc_greedy_decode(logits: torch.Tensor, input_lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best-path decoding: the argmax class per valid frame, repeats collapsed, blanks removed.

    ``logits`` (or log-probabilities) ``(B, T, C)`` batch first, ``input_lengths`` ``(B,)``; returns one list of
    class ids per sample.
    """
    if logits.dim() != 3:
        raise ValueError(f"`logits` must be (batch, frames, classes), got shape {tuple(logits.shape)}.")
    best = logits.argmax(dim=-1).cpu()
    lengths = input_lengths.cpu().long().tolist()
    decoded = []
    for row, length in zip(best, lengths):
        path = row[:length]
        if length:
            keep = torch.ones(length, dtype=torch.bool)
            keep[1:] = path[1:] != path[:-1]
            path = path[keep & (path != blank)]
        decoded.append(path.tolist())
    return decoded


__all__ = ["ctc_greedy_decode", "ctc_log_likelihood", "ctc_min_input_lengths"]
