"""White-box attacks on a reward model that mirror what a policy optimised against it can do.

- :func:`greedy_token_edits`: token substitutions chosen one at a time by the exact reward. HotFlip's first-order
  estimate ``g[i, b] - g[i, a]`` (``g`` the gradient of ``log P_RM(target)`` w.r.t. the one-hot input) proposes
  candidates; each is re-scored exactly and the best is kept while it raises the reward. The curve of reward gain
  against the number of edits is what a policy buys per token it changes.
- :func:`gumbel_token_attack`: the DiffRO path itself. Free per-position logits, initialised so that each position
  samples its input token with a chosen probability, are optimised through the straight-through Gumbel-Softmax
  against the reward function `DiffROTrainer` would optimise (``rewards.EmotionReward``), as the policy's logits are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..ops.gumbel import gumbel_softmax_sample
from .scoring import TokenLists, log_prob_of, model_device, pad


def _allowed_mask(vocab_size: int, allowed_ids: Sequence[int] | None, device) -> torch.Tensor:
    if allowed_ids is None:
        return torch.ones(vocab_size, dtype=torch.bool, device=device)
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    ids = torch.as_tensor(list(allowed_ids), dtype=torch.long, device=device)
    if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"allowed_ids must be a non-empty set of ids in [0, {vocab_size}).")
    mask[ids] = True
    return mask


def greedy_token_edits(
    model,
    token_lists: TokenLists,
    label: int,
    budget: int,
    num_candidates: int = 16,
    allowed_ids: Sequence[int] | None = None,
    batch_size: int = 32,
) -> dict[str, torch.Tensor]:
    """Up to ``budget`` greedy substitutions per sequence, each the best of ``num_candidates`` HotFlip candidates by
    the exact ``log P_RM(label)``; a position is edited at most once, and a sequence stops when no candidate raises
    its reward.

    Returns (CPU tensors, one row per sequence): ``log_prob`` ``(N, budget + 1)``, the reward after 0, 1, ...
    edits (flat after the sequence stopped); ``new_tokens`` ``(N, budget)``, the id each accepted edit wrote (-1:
    no edit); ``hidden_shift`` ``(N, budget)``, the L2 norm of the change of h' each edit caused (NaN: no edit);
    ``tokens``, the sequences after their edits (lists of ids, unpadded), so that a judge can score what the attack
    wrote.
    """
    if budget < 1 or num_candidates < 1:
        raise ValueError(f"budget and num_candidates must be >= 1, got {budget} and {num_candidates}.")
    vocab_size = model.config.vocab_size
    device = model_device(model)
    allowed = _allowed_mask(vocab_size, allowed_ids, device)
    log_probs, new_tokens, shifts, edited = [], [], [], []
    for start in range(0, len(token_lists), batch_size):
        ids, mask = pad(model, token_lists[start : start + batch_size])
        ids = ids.masked_fill(~mask.bool(), 0)  # padded frames: any codebook id (one-hot), masked out everywhere
        batch, length = ids.shape
        candidates = min(num_candidates, length * vocab_size)
        current = ids.clone()
        editable = mask.bool().clone()
        active = torch.ones(batch, dtype=torch.bool, device=device)
        rows = torch.arange(batch, device=device)
        batch_log_probs = torch.zeros(batch, budget + 1)
        batch_tokens = torch.full((batch, budget), -1, dtype=torch.long)
        batch_shifts = torch.full((batch, budget), math.nan)
        for step in range(budget + 1):
            onehot = F.one_hot(current, vocab_size).float().requires_grad_(True)
            with torch.enable_grad():
                outputs = model(input_token_probs=onehot, attention_mask=mask)
                reward = log_prob_of(outputs.logits, label)
                (grad,) = torch.autograd.grad(reward.sum(), onehot)
            batch_log_probs[:, step] = reward.detach().cpu()
            if step == budget:
                break
            # First-order gain of writing id b at position i in place of the current id a.
            gain = grad - grad.gather(-1, current.unsqueeze(-1))
            gain = gain.masked_fill(~editable.unsqueeze(-1), -math.inf).masked_fill(~allowed, -math.inf)
            gain = gain.scatter(-1, current.unsqueeze(-1), -math.inf)
            top = gain.flatten(1).topk(candidates, dim=-1)
            positions, tokens = top.indices // vocab_size, top.indices % vocab_size
            proposals = current.unsqueeze(1).repeat(1, candidates, 1)
            proposals.scatter_(-1, positions.unsqueeze(-1), tokens.unsqueeze(-1))
            with torch.no_grad():
                proposed = model(
                    input_ids=proposals.flatten(0, 1), attention_mask=mask.repeat_interleave(candidates, dim=0)
                )
                exact = log_prob_of(proposed.logits, label).view(batch, candidates)
                exact = exact.masked_fill(~torch.isfinite(top.values), -math.inf)
                best = exact.argmax(dim=-1)
                accept = active & (exact[rows, best] > reward.detach())
                chosen_positions, chosen_tokens = positions[rows, best], tokens[rows, best]
                hidden = proposed.last_hidden_state.view(batch, candidates, length, -1)[rows, best]
                shift = ((hidden - outputs.last_hidden_state.detach()) * mask.unsqueeze(-1)).float()
                shift = shift.pow(2).sum(dim=(1, 2)).sqrt()
            accepted = accept.nonzero().flatten()
            current[accepted, chosen_positions[accepted]] = chosen_tokens[accepted]
            editable[accepted, chosen_positions[accepted]] = False
            batch_tokens[accept.cpu(), step] = chosen_tokens[accept].cpu()
            batch_shifts[accept.cpu(), step] = shift[accept].cpu()
            active &= accept
        # A sequence that stopped keeps its reward: carry the last value forward.
        for step in range(1, budget + 1):
            stopped = batch_tokens[:, step - 1] < 0
            batch_log_probs[stopped, step] = batch_log_probs[stopped, step - 1]
        log_probs.append(batch_log_probs)
        lengths = mask.sum(dim=1).tolist()
        edited.extend(row[:length] for row, length in zip(current.cpu().tolist(), lengths))
        new_tokens.append(batch_tokens)
        shifts.append(batch_shifts)
    return {
        "log_prob": torch.cat(log_probs),
        "new_tokens": torch.cat(new_tokens),
        "hidden_shift": torch.cat(shifts),
        "tokens": edited,
    }


def gumbel_token_attack(
    model,
    reward_function: Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor],
    token_lists: TokenLists,
    target_emotion: str,
    label: int,
    steps: int = 30,
    learning_rate: float = 0.5,
    init_probability: float = 0.9,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, torch.Tensor]:
    """DiffRO's path as an attack: per-position logits ``z`` (one row per speech frame, over the codebook) start at
    ``log(p/(1-p)·(V-1))`` on the input token and 0 elsewhere, so that ``softmax(z)`` gives the input token
    probability ``p = init_probability``; ``steps`` Adam steps then lower ``reward_function(y, mask, batch)`` (a
    per-sample loss, reward = -loss) with ``y`` the straight-through Gumbel-Softmax sample of ``z`` at
    ``temperature``, as `DiffROTrainer` lowers it through the policy's logits.

    Returns per sequence (CPU): ``log_prob_before`` / ``log_prob_after``, ``log P_RM(label)`` of the input and of
    the attacked tokens ``argmax z`` (the mode the optimised logits would emit), ``reward_before`` /
    ``reward_after``, the reward function's value ``-loss`` on their one-hot, and ``edits``, the number of positions
    whose token changed.
    """
    if not 0.0 < init_probability < 1.0:
        raise ValueError(f"init_probability must lie in (0, 1), got {init_probability}.")
    vocab_size = model.config.vocab_size
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    init_logit = math.log(init_probability / (1.0 - init_probability) * (vocab_size - 1))
    out = {key: [] for key in ("log_prob_before", "log_prob_after", "reward_before", "reward_after", "edits")}
    for start in range(0, len(token_lists), batch_size):
        ids, mask = pad(model, token_lists[start : start + batch_size])
        ids = ids.masked_fill(~mask.bool(), 0)  # padded frames: any codebook id, masked out everywhere
        batch = {"target_emotions": [target_emotion] * ids.shape[0]}
        logits = (init_logit * F.one_hot(ids, vocab_size).float()).requires_grad_(True)
        optimizer = torch.optim.Adam([logits], lr=learning_rate)
        with torch.enable_grad():
            for _ in range(steps):
                sample, _ = gumbel_softmax_sample(logits, temperature, generator=generator)
                loss = reward_function(sample, mask, batch).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        attacked = torch.where(mask.bool(), logits.detach().argmax(dim=-1), ids)
        with torch.no_grad():
            for name, tokens in (("before", ids), ("after", attacked)):
                onehot = F.one_hot(tokens, vocab_size).float()
                out[f"reward_{name}"].append(-reward_function(onehot, mask, batch).float().cpu())
                logits_rm = model(input_ids=tokens, attention_mask=mask).logits
                out[f"log_prob_{name}"].append(log_prob_of(logits_rm, label).cpu())
        out["edits"].append(((attacked != ids) & mask.bool()).sum(dim=1).float().cpu())
    return {key: torch.cat(values) for key, values in out.items()}


__all__ = ["greedy_token_edits", "gumbel_token_attack"]
