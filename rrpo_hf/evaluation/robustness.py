"""Direct robustness probes of a speech-emotion reward model.

The RRPO paper argues that a vanilla RM is hacked under DiffRO and that LS + EAM + Adv prevents it,
but measures that only through listeners. These probes measure the RM itself:

- :func:`artifact_sensitivity`: how much inserting artifact tokens (clicks that carry no emotion)
  into natural speech of *other* emotions raises the RM's probability of a target emotion. A RM
  that learned a spurious artifact -> emotion shortcut shows a large positive delta; this is
  exactly the shortcut a DiffRO policy discovers and exploits.
- :func:`token_substitution_attack`: a bounded, greedy, gradient-guided (HotFlip) attack on the
  soft-token input that DiffRO back-propagates through. At most ``k`` token swaps per utterance;
  the attack success rate is the fraction of initially-correct utterances whose prediction flips.
- :func:`embedding_attack_accuracy`: accuracy under an L2-bounded perturbation of the high-level
  embeddings h' (FGM as paper Eq. 4, or PGD), i.e. the threat model the Adv term trains against.

All probes run batched on the model's device, put the model in eval mode, and leave it as they
found it (training flag, ``requires_grad`` flags, no ``.grad`` written): gradients are taken with
``torch.autograd.grad`` w.r.t. inputs only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.labels import UnknownEmotionError, normalize_emotion
from ..data.padding import right_pad
from ..data.token_edits import insert_tokens
from ..ops.adversarial import fgm_perturbation
from .metrics import emotion_recognition_scores
from .scorers import classifier_logits


TokenSequences = Sequence[Sequence[int]]
InsertFn = Callable[[list[list[int]], float, int], list[list[int]]]


# ------------------------------------------------------------------------------------------------ helpers
def _check_model(model) -> None:
    missing = [name for name in ("classify", "config") if not hasattr(model, name)]
    if missing:
        raise TypeError(
            f"{type(model).__name__} lacks {missing}; the robustness probes need a RobustSERForAudioClassification-"
            "like reward model (forward(input_ids | input_token_probs, attention_mask) returning logits and "
            "last_hidden_state, and classify(h', mask))."
        )
    for name in ("vocab_size", "pad_token_id", "num_labels"):
        if getattr(model.config, name, None) is None:
            raise TypeError(f"model.config has no `{name}`; expected a RobustSERConfig-like config.")


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextmanager
def _frozen_eval(model) -> Iterator[None]:
    """Eval mode and frozen parameters for the duration of a probe; the previous state is restored after.

    Freezing the parameters means the input-gradient passes below never build parameter gradients, so no
    ``.grad`` is written to the model and no memory is spent on them.
    """
    was_training = model.training
    requires_grad = [parameter.requires_grad for parameter in model.parameters()]
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(model.parameters(), requires_grad):
            parameter.requires_grad_(flag)
        model.train(was_training)


def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _as_token_lists(speech_tokens, model, name: str = "speech_tokens") -> list[list[int]]:
    """Validate utterances up front (with their global index) so a bad row fails before any compute."""
    if isinstance(speech_tokens, (str, bytes)) or not hasattr(speech_tokens, "__len__"):
        raise TypeError(f"`{name}` must be a sequence of token-id sequences, got {type(speech_tokens).__name__}.")
    if len(speech_tokens) == 0:
        raise ValueError(f"`{name}` is empty: pass at least one utterance.")
    vocab_size = model.config.vocab_size
    max_length = getattr(model.config, "max_position_embeddings", None)
    out = []
    for index, tokens in enumerate(speech_tokens):
        if isinstance(tokens, torch.Tensor):
            tokens = tokens.tolist()
        if isinstance(tokens, (int, np.integer)):
            raise TypeError(
                f"`{name}` must be a batch of utterances (list of lists); element {index} is a single token id. "
                "Wrap a single utterance in a list."
            )
        tokens = [int(token) for token in tokens]
        if not tokens:
            raise ValueError(f"Utterance {index} of `{name}` is empty; filter out utterances without speech tokens.")
        bad = [token for token in tokens if not 0 <= token < vocab_size]
        if bad:
            raise ValueError(
                f"Utterance {index} of `{name}` has token id {bad[0]} outside the reward model's codebook "
                f"[0, {vocab_size}). Check the speech tokenizer / the model's vocab_size."
            )
        if max_length is not None and len(tokens) > max_length:
            raise ValueError(
                f"Utterance {index} of `{name}` has {len(tokens)} tokens, more than the reward model's "
                f"max_position_embeddings={max_length}. Truncate or filter long utterances (artifact insertion "
                "lengthens them by ceil(rate * n) tokens)."
            )
        out.append(tokens)
    return out


def _label_id(label, model, what: str) -> int:
    num_labels = model.config.num_labels
    if isinstance(label, str):
        label2id = dict(model.config.label2id or {})
        if label in label2id:
            return int(label2id[label])
        try:
            name = normalize_emotion(label)
        except UnknownEmotionError as error:
            raise UnknownEmotionError(f"{what}: {error}") from None
        if name not in label2id:
            raise UnknownEmotionError(
                f"{what} is {label!r} (canonical {name!r}), which the reward model does not predict; its labels are "
                f"{sorted(label2id)}."
            )
        return int(label2id[name])
    if isinstance(label, bool) or not hasattr(label, "__index__"):
        raise TypeError(f"{what} is {label!r} of type {type(label).__name__}; expected an int id or an emotion name.")
    label = int(label)
    if not 0 <= label < num_labels:
        raise ValueError(f"{what} is the id {label}, outside the reward model's classes [0, {num_labels}).")
    return label


def _label_ids(labels, model, count: int, name: str) -> list[int]:
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()
    labels = list(labels)
    if len(labels) != count:
        raise ValueError(
            f"`{name}` has {len(labels)} entries but `speech_tokens` has {count} utterances; they must match."
        )
    return [_label_id(label, model, f"`{name}`[{index}]") for index, label in enumerate(labels)]


def _token_id_set(token_ids, model, name: str) -> torch.Tensor:
    ids = torch.as_tensor(np.asarray(token_ids, dtype=np.int64).reshape(-1))
    if ids.numel() == 0:
        raise ValueError(f"`{name}` is empty: pass at least one token id.")
    vocab_size = model.config.vocab_size
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if bad.numel():
        raise ValueError(f"`{name}` contains id {int(bad[0])} outside the reward model's codebook [0, {vocab_size}).")
    return torch.unique(ids)


def _batches(count: int, batch_size: int, description: str, show_progress: bool) -> Iterator[range]:
    starts = range(0, count, batch_size)
    for start in tqdm(starts, desc=description, disable=not show_progress, total=len(starts)):
        yield range(start, min(start + batch_size, count))


def _probabilities(
    model, sequences: list[list[int]], batch_size: int, description: str, show_progress: bool
) -> torch.Tensor:
    with tqdm(total=len(sequences), desc=description, disable=not show_progress) as progress:
        logits = classifier_logits(model, sequences, batch_size, on_batch=progress.update)
    return torch.softmax(logits, dim=-1)


# ---------------------------------------------------------------------------------------- (a) artifacts
def insert_artifact_tokens(
    speech_tokens: TokenSequences, artifact_token_ids: Sequence[int], rate: float, seed: int = 0
) -> list[list[int]]:
    """Insert ``ceil(rate * n)`` tokens drawn uniformly from ``artifact_token_ids`` at uniformly random positions.

    Same semantics and random stream as :func:`rrpo_hf.testbed.insert_artifacts` (which draws from a testbed
    world's artifact ids), for any artifact id set, e.g. a real codebook's click tokens.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"`rate` must be in [0, 1] (inserted artifacts per original token), got {rate}.")
    if np.asarray(artifact_token_ids).size == 0:
        raise ValueError("`artifact_token_ids` is empty: pass at least one artifact token id.")
    if len(speech_tokens) == 0:
        return []
    return insert_tokens([list(tokens) for tokens in speech_tokens], artifact_token_ids, rate, seed)


def artifact_sensitivity(
    model,
    speech_tokens: TokenSequences,
    emotions: Sequence[int | str],
    target_emotion: int | str,
    artifact_token_ids: Sequence[int] | None = None,
    rate: float = 0.1,
    seed: int = 0,
    batch_size: int = 32,
    insert_fn: InsertFn | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Change in the RM's probability of ``target_emotion`` when artifact tokens are inserted into natural speech.

    Only utterances whose true emotion differs from ``target_emotion`` are probed: for them a rise of
    ``P(target)`` is pure shortcut (artifacts carry no emotion), the signal a reward-hacking policy exploits.

    Args:
        model: a `RobustSERForAudioClassification` (any model with its forward signature and config).
        speech_tokens: natural (artifact-free) utterances, token ids in ``[0, vocab_size)``.
        emotions: true emotion (id or name) of each utterance.
        target_emotion: the emotion (id or name) whose probability is watched.
        artifact_token_ids: the ids to insert (testbed: ``EmotionWorld().artifact_token_ids``). Needed unless
            ``insert_fn`` is given.
        rate: inserted artifacts per original token (``ceil(rate * n)`` per utterance).
        seed: seed of the insertion positions and ids.
        batch_size: utterances per forward pass.
        insert_fn: optional ``insert_fn(token_lists, rate, seed) -> token_lists`` replacing the default
            insertion, e.g. ``lambda t, r, s: rrpo_hf.testbed.insert_artifacts(t, r, world, s)``.
        show_progress: show tqdm bars.

    Returns:
        dict with ``n`` (utterances probed), ``mean_prob_before``, ``mean_prob_after``, ``mean_delta`` (after -
        before), ``std_delta``, ``flip_rate`` (among probed utterances *not* predicted as the target before, the
        fraction predicted as the target after; NaN if there are none), ``num_flippable``,
        ``target_prediction_rate_before`` / ``_after`` and ``mean_artifacts_inserted``.
    """
    _check_model(model)
    batch_size = _check_positive_int(batch_size, "batch_size")
    if insert_fn is None and artifact_token_ids is None:
        raise ValueError(
            "Pass `artifact_token_ids` (e.g. EmotionWorld().artifact_token_ids) or an `insert_fn` that inserts them."
        )
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"`rate` must be in [0, 1] (inserted artifacts per original token), got {rate}.")
    sequences = _as_token_lists(speech_tokens, model)
    emotion_ids = _label_ids(emotions, model, len(sequences), "emotions")
    target = _label_id(target_emotion, model, "`target_emotion`")
    probed = [tokens for tokens, emotion in zip(sequences, emotion_ids) if emotion != target]
    if not probed:
        raise ValueError(
            f"Every utterance has the target emotion {target}; artifact sensitivity needs natural speech of *other* "
            "emotions."
        )

    if insert_fn is None:
        artifacts = _token_id_set(artifact_token_ids, model, "artifact_token_ids").tolist()
        perturbed = insert_artifact_tokens(probed, artifacts, rate, seed)
    else:
        perturbed = [list(map(int, tokens)) for tokens in insert_fn([list(tokens) for tokens in probed], rate, seed)]
        if len(perturbed) != len(probed):
            raise ValueError(f"`insert_fn` returned {len(perturbed)} utterances for {len(probed)} inputs.")
    perturbed = _as_token_lists(perturbed, model, name="artifact-inserted speech_tokens")

    with _frozen_eval(model):
        before = _probabilities(model, probed, batch_size, "RM on natural speech", show_progress)
        after = _probabilities(model, perturbed, batch_size, "RM on artifact-inserted speech", show_progress)

    prob_before, prob_after = before[:, target].double(), after[:, target].double()
    delta = prob_after - prob_before
    predicted_before, predicted_after = before.argmax(-1) == target, after.argmax(-1) == target
    flippable = ~predicted_before
    num_flippable = int(flippable.sum())
    return {
        "n": len(probed),
        "target_emotion": target,
        "rate": float(rate),
        "mean_prob_before": float(prob_before.mean()),
        "mean_prob_after": float(prob_after.mean()),
        "mean_delta": float(delta.mean()),
        "std_delta": float(delta.std(unbiased=False)),
        "flip_rate": float((predicted_after & flippable).sum() / num_flippable) if num_flippable else float("nan"),
        "num_flippable": num_flippable,
        "target_prediction_rate_before": float(predicted_before.double().mean()),
        "target_prediction_rate_after": float(predicted_after.double().mean()),
        "mean_artifacts_inserted": float(np.mean([len(b) - len(a) for a, b in zip(probed, perturbed)])),
    }


def exaggeration_sensitivity(
    model,
    speech_tokens: TokenSequences,
    exaggerated_speech_tokens: TokenSequences,
    target_emotion: int | str,
    batch_size: int = 32,
    show_progress: bool = True,
) -> dict[str, Any]:
    """How the RM's probability of ``target_emotion`` changes when its natural rendering is exaggerated.

    ``speech_tokens[i]`` and ``exaggerated_speech_tokens[i]`` say the same text, the second with the emotion's cue
    pushed past natural levels (testbed: intensity > 1, accents where natural speech has none). A positive
    ``mean_delta`` means the RM rewards the exaggeration: a policy optimised against it gains reward by leaving
    natural prosody, the cue-exaggeration route to reward hacking. Zero or negative: exaggerating does not pay.

    Returns:
        dict with ``n``, ``mean_prob_natural``, ``mean_prob_exaggerated``, ``mean_delta`` (exaggerated - natural)
        and ``mean_delta_log_prob`` (the change of the DiffRO reward ``log P(target)``).
    """
    _check_model(model)
    batch_size = _check_positive_int(batch_size, "batch_size")
    natural = _as_token_lists(speech_tokens, model)
    exaggerated = _as_token_lists(exaggerated_speech_tokens, model, name="exaggerated_speech_tokens")
    if len(natural) != len(exaggerated) or not natural:
        raise ValueError(
            f"Pass the same non-empty set of utterances twice (natural, exaggerated); got {len(natural)} and "
            f"{len(exaggerated)}."
        )
    target = _label_id(target_emotion, model, "`target_emotion`")
    with _frozen_eval(model):
        before = _probabilities(model, natural, batch_size, "RM on natural speech", show_progress)[:, target]
        after = _probabilities(model, exaggerated, batch_size, "RM on exaggerated speech", show_progress)[:, target]
    before, after = before.double(), after.double()
    tiny = torch.finfo(torch.float32).tiny
    return {
        "n": len(natural),
        "target_emotion": target,
        "mean_prob_natural": float(before.mean()),
        "mean_prob_exaggerated": float(after.mean()),
        "mean_delta": float((after - before).mean()),
        "mean_delta_log_prob": float((after.clamp_min(tiny).log() - before.clamp_min(tiny).log()).mean()),
    }


# ------------------------------------------------------------------------------ (b) token substitutions
def token_substitution_attack(
    model,
    speech_tokens: TokenSequences,
    labels: Sequence[int | str],
    max_substitutions: int = 1,
    candidate_token_ids: Sequence[int] | None = None,
    batch_size: int = 8,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Greedy gradient-guided (HotFlip) token-substitution attack on the RM's soft-token input.

    The utterance enters as exact one-hot ``input_token_probs`` (the DiffRO path, so the forward pass *is* the
    discrete utterance). Each step takes ``g = dCE/d(one-hot)`` and scores swapping position ``p`` to token ``v``
    by its first-order loss increase ``g[p, v] - g[p, current_p]``; the best swap over all not-yet-substituted
    valid positions and candidate tokens is applied, and the utterance is re-scored. An utterance stops when its
    prediction leaves the true label or after ``max_substitutions`` swaps. Only initially-correct utterances are
    attacked.

    Args:
        model: a `RobustSERForAudioClassification`.
        speech_tokens: utterances, token ids in ``[0, vocab_size)``.
        labels: true emotion (id or name) per utterance.
        max_substitutions: the budget ``k`` of swapped positions per utterance (``0`` = no attack).
        candidate_token_ids: tokens an attacker may write (default: the whole codebook); e.g. natural-speech ids
            only, to model a policy that cannot emit artifacts.
        batch_size: utterances per pass; memory grows as ``batch_size * length * vocab_size``.
        show_progress: show a tqdm bar.

    Returns:
        dict with ``attack_success_rate`` (flipped / initially correct; NaN if none is correct), ``clean_accuracy``,
        ``num_attacked``, ``num_flipped``, ``mean_substitutions`` (over attacked utterances),
        ``mean_substitutions_successful`` (over flipped ones; NaN if none), ``n`` and ``per_utterance``: one dict per
        utterance with ``label``, ``initial_prediction``, ``final_prediction``, ``initially_correct``, ``flipped``,
        ``num_substitutions``, ``substitutions`` (``[(position, old_id, new_id), ...]``), ``label_prob_before``,
        ``label_prob_after`` and ``attacked_tokens``.
    """
    _check_model(model)
    max_substitutions = _check_positive_int(max_substitutions, "max_substitutions", minimum=0)
    batch_size = _check_positive_int(batch_size, "batch_size")
    sequences = _as_token_lists(speech_tokens, model)
    label_ids = _label_ids(labels, model, len(sequences), "labels")
    vocab_size = model.config.vocab_size
    device = _model_device(model)
    allowed = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    if candidate_token_ids is None:
        allowed[:] = True
    else:
        allowed[_token_id_set(candidate_token_ids, model, "candidate_token_ids").to(device)] = True

    results: list[dict[str, Any]] = []
    with _frozen_eval(model):
        description = f"Token-substitution attack (k={max_substitutions})"
        for rows in _batches(len(sequences), batch_size, description, show_progress):
            batch_sequences, batch_labels = [sequences[i] for i in rows], [label_ids[i] for i in rows]
            results.extend(_attack_batch(model, batch_sequences, batch_labels, max_substitutions, allowed))

    attacked = [result for result in results if result["initially_correct"]]
    flipped = [result for result in attacked if result["flipped"]]
    return {
        "n": len(results),
        "max_substitutions": max_substitutions,
        "clean_accuracy": len(attacked) / len(results),
        "num_attacked": len(attacked),
        "num_flipped": len(flipped),
        "attack_success_rate": len(flipped) / len(attacked) if attacked else float("nan"),
        "mean_substitutions": float(np.mean([r["num_substitutions"] for r in attacked])) if attacked else float("nan"),
        "mean_substitutions_successful": (
            float(np.mean([r["num_substitutions"] for r in flipped])) if flipped else float("nan")
        ),
        "per_utterance": results,
    }


def _attack_batch(model, sequences, labels, max_substitutions: int, allowed: torch.Tensor) -> list[dict[str, Any]]:
    device = allowed.device
    vocab_size = model.config.vocab_size
    input_ids, attention_mask = right_pad(sequences, model.config.pad_token_id, device)
    labels = torch.tensor(labels, dtype=torch.long, device=device)
    original_ids = input_ids.clone()
    valid = attention_mask.bool()
    # pad frames hold pad_token_id == vocab_size, outside the one-hot range: one-hot a codebook id there instead
    # (its features are zeroed by the mask anyway).
    codebook_ids = input_ids.masked_fill(~valid, 0)

    with torch.no_grad():
        initial_probs = torch.softmax(model(input_ids=input_ids, attention_mask=attention_mask).logits.float(), -1)
    initial_prediction = initial_probs.argmax(-1)
    active = initial_prediction == labels
    substituted = torch.zeros_like(valid)
    num_substitutions = torch.zeros_like(labels)
    swaps: list[list[tuple[int, int, int]]] = [[] for _ in sequences]

    for _ in range(max_substitutions):
        rows = active.nonzero().flatten()
        if rows.numel() == 0:
            break
        one_hot = F.one_hot(codebook_ids[rows], vocab_size).to(model.dtype).requires_grad_(True)
        with torch.enable_grad():
            logits = model(input_token_probs=one_hot, attention_mask=attention_mask[rows]).logits
            # a sum of per-utterance losses: each utterance's gradient is its own (no cross-sample coupling in eval)
            loss = F.cross_entropy(logits.float(), labels[rows], reduction="sum")
            (grad,) = torch.autograd.grad(loss, one_hot)
        grad = grad.float()
        score = grad - grad.gather(-1, codebook_ids[rows].unsqueeze(-1))
        score = score.masked_fill(~allowed, -math.inf)
        score = score.scatter(-1, codebook_ids[rows].unsqueeze(-1), -math.inf)  # a swap must change the token
        score = score.masked_fill(~(valid[rows] & ~substituted[rows]).unsqueeze(-1), -math.inf)
        best_score, best = score.flatten(1).max(dim=-1)
        possible = torch.isfinite(best_score)
        # an utterance with no admissible swap left (all positions used, or no candidate differs) stops here
        active[rows[~possible]] = False
        rows, best = rows[possible], best[possible]
        if rows.numel() == 0:
            break
        positions, new_tokens = best // vocab_size, best % vocab_size
        for row, position, new_token in zip(rows.tolist(), positions.tolist(), new_tokens.tolist()):
            swaps[row].append((position, int(codebook_ids[row, position]), new_token))
        codebook_ids[rows, positions] = new_tokens
        substituted[rows, positions] = True
        num_substitutions[rows] += 1
        with torch.no_grad():
            one_hot = F.one_hot(codebook_ids[rows], vocab_size).to(model.dtype)
            prediction = model(input_token_probs=one_hot, attention_mask=attention_mask[rows]).logits.argmax(-1)
        active[rows[prediction != labels[rows]]] = False

    # the reported outcome is the RM on the discrete attacked utterance (the id path), not the one-hot surrogate
    attacked_ids = torch.where(valid, codebook_ids, original_ids)
    with torch.no_grad():
        final_probs = torch.softmax(model(input_ids=attacked_ids, attention_mask=attention_mask).logits.float(), -1)
    final_prediction = final_probs.argmax(-1)
    initially_correct = initial_prediction == labels
    out = []
    for row, tokens in enumerate(sequences):
        label = int(labels[row])
        out.append(
            {
                "label": label,
                "initial_prediction": int(initial_prediction[row]),
                "final_prediction": int(final_prediction[row]),
                "initially_correct": bool(initially_correct[row]),
                "flipped": bool(initially_correct[row] and final_prediction[row] != labels[row]),
                "num_substitutions": int(num_substitutions[row]),
                "substitutions": swaps[row],
                "label_prob_before": float(initial_probs[row, label]),
                "label_prob_after": float(final_probs[row, label]),
                "attacked_tokens": attacked_ids[row, : len(tokens)].tolist(),
            }
        )
    return out


# --------------------------------------------------------------------------------- (c) h' perturbations
def _project_l2(delta: torch.Tensor, attention_mask: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Scale each sample's perturbation back into the L2 ball of radius epsilon (norm over valid frames)."""
    delta = delta * attention_mask.to(delta.dtype).unsqueeze(-1)
    norm = delta.float().pow(2).sum(dim=(1, 2)).sqrt()
    scale = torch.clamp(epsilon / norm.clamp_min(torch.finfo(torch.float32).tiny), max=1.0)
    return (delta.float() * scale[:, None, None]).to(delta.dtype)


def _loss_gradient(model, hidden_states, attention_mask, labels) -> torch.Tensor:
    hidden_states = hidden_states.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model.classify(hidden_states, attention_mask)
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, hidden_states)
    return grad


def embedding_attack_accuracy(
    model,
    speech_tokens: TokenSequences,
    labels: Sequence[int | str],
    epsilon: float,
    steps: int = 1,
    step_size: float | None = None,
    batch_size: int = 32,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Accuracy of the RM under an L2-bounded adversarial perturbation of its high-level embeddings h'.

    ``steps=1`` is FGM exactly as paper Eq. 4 (``delta = epsilon * g / ||g||``, one norm per utterance over its valid
    frames, :func:`rrpo_hf.ops.fgm_perturbation`), with ``g`` the gradient of the cross-entropy of the true label.
    ``steps > 1`` is PGD warm-started from that FGM point: ``steps - 1`` further normalised-gradient steps of
    ``step_size`` (default ``2.5 * epsilon / steps``; ignored for FGM), each projected back onto the epsilon ball.
    An utterance counts as broken if *any* iterate (``delta = 0`` included) misclassifies it, so PGD is never weaker
    than FGM at the same epsilon and attacked accuracy never exceeds clean accuracy.

    The attack objective is the unsmoothed cross-entropy: with label smoothing an over-confident utterance's loss
    gradient points *towards* more confidence, which would make the probe needlessly weak.

    Returns:
        dict with ``clean_accuracy``, ``attacked_accuracy``, ``accuracy_drop``, ``clean_ua`` / ``attacked_ua``
        (unweighted accuracy, via :func:`rrpo_hf.evaluation.emotion_recognition_scores`), ``mean_perturbation_norm``,
        ``max_perturbation_norm``, ``mean_hidden_norm`` (mean per-utterance L2 norm of the clean h' over valid frames:
        the scale to read ``epsilon`` against), ``n``, ``epsilon``, ``steps`` and ``step_size``.
    """
    _check_model(model)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"`epsilon` must be a finite number >= 0 (the L2 radius on h'), got {epsilon!r}.")
    steps = _check_positive_int(steps, "steps")
    batch_size = _check_positive_int(batch_size, "batch_size")
    if steps == 1:
        step_size = float(epsilon)  # FGM takes its single step to the boundary; a given step_size does not apply
    elif step_size is None:
        step_size = 2.5 * epsilon / steps
    elif not step_size > 0:
        raise ValueError(f"`step_size` must be > 0 (or None for 2.5 * epsilon / steps), got {step_size!r}.")
    sequences = _as_token_lists(speech_tokens, model)
    label_ids = _label_ids(labels, model, len(sequences), "labels")
    device = _model_device(model)

    clean_predictions, attacked_predictions, norms, hidden_norms = [], [], [], []
    description = "FGM on h'" if steps == 1 else f"PGD-{steps} on h'"
    with _frozen_eval(model):
        for rows in _batches(len(sequences), batch_size, description, show_progress):
            input_ids, attention_mask = right_pad([sequences[i] for i in rows], model.config.pad_token_id, device)
            labels_batch = torch.tensor([label_ids[i] for i in rows], dtype=torch.long, device=device)
            with torch.no_grad():
                output = model(input_ids=input_ids, attention_mask=attention_mask)
            hidden_states, clean = output.last_hidden_state.detach(), output.logits.argmax(-1)
            valid = attention_mask.to(hidden_states.dtype).unsqueeze(-1)
            hidden_norms.append((hidden_states.float() * valid).pow(2).sum(dim=(1, 2)).sqrt().cpu())
            grad = _loss_gradient(model, hidden_states, attention_mask, labels_batch)
            delta = fgm_perturbation(grad, attention_mask, epsilon)
            with torch.no_grad():
                prediction = model.classify(hidden_states + delta, attention_mask).argmax(-1)
            # delta = 0 lies in the ball, so an utterance the RM already gets wrong counts as broken, with its clean
            # prediction: attacked accuracy can never exceed clean accuracy.
            prediction = torch.where(clean != labels_batch, clean, prediction)
            broken = prediction != labels_batch
            for _ in range(steps - 1):
                grad = _loss_gradient(model, hidden_states + delta, attention_mask, labels_batch)
                delta = _project_l2(delta + fgm_perturbation(grad, attention_mask, step_size), attention_mask, epsilon)
                with torch.no_grad():
                    iterate = model.classify(hidden_states + delta, attention_mask).argmax(-1)
                # keep the first misclassifying prediction of an utterance: the attacker stops once it succeeds
                prediction = torch.where(broken, prediction, iterate)
                broken |= iterate != labels_batch
            clean_predictions.append(clean.cpu())
            attacked_predictions.append(prediction.cpu())
            norms.append(delta.float().pow(2).sum(dim=(1, 2)).sqrt().cpu())

    references = np.asarray(label_ids)
    clean_scores = emotion_recognition_scores(
        torch.cat(clean_predictions).numpy(), references, model.config.num_labels
    )
    attacked_scores = emotion_recognition_scores(
        torch.cat(attacked_predictions).numpy(), references, model.config.num_labels
    )
    norms = torch.cat(norms)
    return {
        "n": len(sequences),
        "epsilon": float(epsilon),
        "steps": steps,
        "step_size": float(step_size),
        "clean_accuracy": clean_scores["wa"],
        "attacked_accuracy": attacked_scores["wa"],
        "accuracy_drop": clean_scores["wa"] - attacked_scores["wa"],
        "clean_ua": clean_scores["ua"],
        "attacked_ua": attacked_scores["ua"],
        "mean_perturbation_norm": float(norms.mean()),
        "max_perturbation_norm": float(norms.max()),
        "mean_hidden_norm": float(torch.cat(hidden_norms).mean()),
    }


__all__ = [
    "artifact_sensitivity",
    "embedding_attack_accuracy",
    "exaggeration_sensitivity",
    "insert_artifact_tokens",
    "token_substitution_attack",
]
