"""Batched, KV-cached speech-token generation for :class:`CosyVoice2LM`.

CosyVoice2's own inference decodes one utterance at a time, recomputing nothing but also batching
nothing. Here a whole batch of (left-padded) prompts ``[sos, text, task_id]`` is decoded together
through the backbone's :class:`~transformers.DynamicCache`, with CosyVoice2's sampling rules:

* repetition-aware sampling (:func:`ras_sampling`): nucleus sampling (top-p 0.8, at most top-k 25
  candidates); when the chosen id already occurs ``>= win_size * tau_r`` times among the last
  ``win_size`` generated tokens, it is re-drawn from the full softmax with that id excluded (upstream's
  rule since FunAudioLLM/CosyVoice f2ddcbe, Feb 2026; ``exclude_repeated=False`` keeps the older rule,
  whose re-draw may pick the repeated id again), which breaks the loops that nucleus sampling falls into;
* per-sample length bounds: ``min_len = int(min_len_ratio * n_text)`` and
  ``max_len = int(max_len_ratio * n_text)`` where ``n_text`` counts the *target* text tokens (the
  instruction before ``<|endofprompt|>`` and a zero-shot prompt's transcript do not count, as upstream);
* every stop id (eos, the unused id and the fill id) is masked before ``min_len``, and a sample stops at
  the first stop id it draws. Upstream masks only eos there, so a drawn fill id (which a bistream-trained
  LM learns to emit after every 15 speech tokens) would end its utterance before ``min_len``;
* zero-shot (voice cloning) prompts: ``[sos, prompt_text + text, task_id, prompt_speech]``, generation
  continuing the prompt speech (``prompt_speech_ids``).

Distributed use (DeepSpeed ZeRO-3, DDP, PEFT): generation needs the plain module with all its
parameters present. Wrap calls in :func:`unwrap_for_generation`::

    with unwrap_for_generation(trainer.model_wrapped, trainer.accelerator) as policy:
        tokens = generate_speech_tokens(policy, batch["text_ids"], batch["text_attention_mask"])

It delegates to TRL's ``unwrap_model_for_generation`` (which gathers ZeRO-3 shards, removes the
DeepSpeed hooks for the duration and pauses gradient checkpointing) and then strips a PEFT wrapper.
Every rank must enter the context together, because gathering ZeRO-3 shards is a collective.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence

import torch
from accelerate.utils import is_peft_model
from tqdm.auto import tqdm
from transformers import Qwen2Model

from ...data.padding import right_pad


__all__ = [
    "count_target_text_tokens",
    "generate_speech_tokens",
    "ras_sampling",
    "unwrap_for_generation",
]


def _cache_keyword() -> str:
    """Name of the KV-cache argument of ``Qwen2Model.forward``: ``cache`` in recent transformers (which deprecates
    ``past_key_values``, to be removed in 5.40), ``past_key_values`` in older 5.x releases."""
    parameters = inspect.signature(Qwen2Model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


_CACHE_KEYWORD = _cache_keyword()


def _output_cache(outputs):
    """The KV cache a backbone call returned, under whichever field name this transformers version uses."""
    cache = getattr(outputs, "cache", None) if _CACHE_KEYWORD == "cache" else None
    return cache if cache is not None else outputs["past_key_values"]


def _nucleus_sample(probs: torch.Tensor, top_p: float, top_k: int, generator: torch.Generator | None) -> torch.Tensor:
    """Sample from the smallest prefix of the sorted distribution with mass >= ``top_p``, capped at ``top_k`` ids.

    Same inclusion rule as CosyVoice2's ``nucleus_sampling``: the i-th most likely id is a
    candidate when the mass of the ids before it is still below ``top_p`` and fewer than ``top_k``
    ids were taken. The most likely id is always a candidate.
    """
    # Only the top_k most likely ids can be candidates, so a partial top-k replaces a full sort of the vocabulary.
    sorted_probs, sorted_ids = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    keep = mass_before < top_p
    keep[..., 0] = True
    candidate_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
    choice = torch.multinomial(candidate_probs, 1, generator=generator)
    return sorted_ids.gather(-1, choice).squeeze(-1)


def ras_sampling(
    logits: torch.Tensor,
    recent_tokens: torch.Tensor | None = None,
    *,
    top_p: float = 0.8,
    top_k: int = 25,
    win_size: int = 10,
    tau_r: float = 0.1,
    exclude_repeated: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """CosyVoice2's repetition-aware sampling, for a batch of next-token distributions.

    Args:
        logits (`torch.Tensor` of shape `(batch, vocab)`):
            Next-token logits (or log-probabilities; only their softmax matters). Use `-inf` to
            forbid ids.
        recent_tokens (`torch.Tensor` of shape `(batch, n)`, *optional*):
            Previously generated ids of each sample, oldest first; negative entries are padding and
            never match. Only the last `win_size` columns are looked at.
        top_p (`float`, defaults to 0.8), top_k (`int`, defaults to 25):
            Nucleus sampling parameters.
        win_size (`int`, defaults to 10), tau_r (`float`, defaults to 0.1):
            A nucleus draw that already occurs `>= win_size * tau_r` times in the window is
            replaced by a draw from the full softmax.
        exclude_repeated (`bool`, defaults to `True`):
            Exclude the repeated id from that re-draw (upstream CosyVoice since Feb 2026, commit f2ddcbe). `False`
            re-draws from the full softmax including it (older releases): with probability p on the repeated id
            the re-draw returns it again with probability p. When every other id has probability 0 the repeated
            id is kept (upstream would fail on an all -inf row).
        generator (`torch.Generator`, *optional*): source of randomness.

    Returns:
        `torch.LongTensor` of shape `(batch,)`: the sampled ids.
    """
    if logits.dim() != 2:
        raise ValueError(f"ras_sampling expects logits of shape (batch, vocab), got {tuple(logits.shape)}.")
    _check_sampling_args(top_p, top_k, win_size, tau_r)
    # Softmax in fp32: bf16 probabilities are too coarse for the top-p cut.
    probs = logits.float().softmax(dim=-1)
    if not torch.isfinite(probs).all():
        raise ValueError(
            "ras_sampling got a row whose logits are all -inf or contain NaN; at least one id must be allowed."
        )
    return _ras_sample(probs, recent_tokens, top_p, top_k, win_size, tau_r, generator, exclude_repeated)


def _check_sampling_args(top_p: float, top_k: int, win_size: int, tau_r: float) -> None:
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    if win_size < 1 or tau_r <= 0:
        raise ValueError(f"win_size must be >= 1 and tau_r > 0, got win_size={win_size}, tau_r={tau_r}.")


def _ras_sample(probs, recent_tokens, top_p, top_k, win_size, tau_r, generator, exclude_repeated=True) -> torch.Tensor:
    """`ras_sampling` on validated fp32 probabilities (the generation loop validates its arguments once)."""
    chosen = _nucleus_sample(probs, top_p, top_k, generator)
    if recent_tokens is None or recent_tokens.numel() == 0:
        return chosen
    window = recent_tokens[:, -win_size:].to(chosen.device)
    repetitions = (window == chosen[:, None]).sum(dim=-1)
    # 10 * 0.1 is exactly 1.0 in floating point, matching upstream's `rep_num >= win_size * tau_r`.
    repeated = repetitions >= win_size * tau_r
    if repeated.any():
        # Re-draw only the repeating rows (usually few), not a full-vocabulary sample for every row.
        redraw_probs = probs[repeated]
        if exclude_repeated:
            repeated_ids = chosen[repeated][:, None]
            redraw_probs = redraw_probs.scatter(-1, repeated_ids, 0.0)
            # A row with no mass left (everything else forbidden or underflowed) keeps its nucleus draw.
            stuck = redraw_probs.sum(dim=-1) <= 0
            redraw_probs = torch.where(stuck[:, None], probs[repeated], redraw_probs)
        resampled = torch.multinomial(redraw_probs, 1, generator=generator).squeeze(-1)
        chosen = chosen.clone()
        chosen[repeated] = resampled
    return chosen


def count_target_text_tokens(
    text_ids: torch.Tensor, text_attention_mask: torch.Tensor, prompt_end_token_id: int | None = None
) -> torch.Tensor:
    """Number of text tokens per sample that CosyVoice2 counts for its length bounds.

    With ``prompt_end_token_id`` (the id of ``<|endofprompt|>``), only tokens after its last
    occurrence count: the instruction is a prompt, not text to be spoken. Rows without the token
    count all their tokens.
    """
    mask = text_attention_mask.bool()
    total = mask.sum(dim=-1)
    if prompt_end_token_id is None:
        return total
    is_end = (text_ids == prompt_end_token_id) & mask
    positions = torch.arange(text_ids.shape[1], device=text_ids.device).expand_as(text_ids)
    last_end = torch.where(is_end, positions, torch.full_like(positions, -1)).max(dim=-1).values
    after_end = (mask & (positions > last_end[:, None])).sum(dim=-1)
    return torch.where(last_end >= 0, after_end, total)


def _resolve_policy(model):
    """Strip wrappers that hide the CosyVoice2LM methods generation needs (PEFT, DDP)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    if is_peft_model(model):  # LoRA layers are injected in place, so the base model runs them
        model = model.get_base_model()
    required = ("embed_prompt", "speech_logits", "speech_embedding", "model", "config")
    missing = [name for name in required if not hasattr(model, name)]
    if missing:
        raise TypeError(
            f"generate_speech_tokens needs a CosyVoice2LM (or a PEFT model around one); {type(model).__name__} lacks "
            f"{missing}. Under DeepSpeed/DDP, call it inside `with unwrap_for_generation(model, accelerator) as "
            "policy:`."
        )
    return model


def _as_padded_batch(text_ids, text_attention_mask, device) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(text_ids, torch.Tensor):
        if text_ids.dim() == 1:
            text_ids = text_ids[None]
        if text_ids.dim() != 2:
            raise ValueError(f"text_ids must have shape (batch, text_len), got {tuple(text_ids.shape)}.")
        if text_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"text_ids must be integer token ids, got dtype {text_ids.dtype}.")
        if text_attention_mask is None:
            text_attention_mask = torch.ones_like(text_ids)
        elif text_attention_mask.shape != text_ids.shape:
            raise ValueError(
                f"text_attention_mask has shape {tuple(text_attention_mask.shape)} but text_ids has "
                f"{tuple(text_ids.shape)}."
            )
        return text_ids.long().to(device), text_attention_mask.long().to(device)
    if not isinstance(text_ids, Sequence) or not all(isinstance(row, Sequence) for row in text_ids):
        raise TypeError("text_ids must be a (batch, text_len) LongTensor or a list of token-id lists.")
    if text_attention_mask is not None:
        raise ValueError(
            "text_attention_mask is only meaningful with a padded tensor; omit it for a list of token-id lists."
        )
    return right_pad(text_ids, 0, device)


def _as_prompt_speech(prompt_speech_ids, prompt_speech_attention_mask, batch_size, device):
    """``(ids, mask)`` of the optional zero-shot prompt speech on ``device``; lists are right-padded.

    Tensor shapes (and a mask without ids) are checked once, where the prompt is embedded
    (:meth:`CosyVoice2LM.embed_prompt`), before the first decoding step.
    """
    if prompt_speech_ids is None or isinstance(prompt_speech_ids, torch.Tensor):
        to_device = lambda tensor: None if tensor is None else tensor.long().to(device)  # noqa: E731
        return to_device(prompt_speech_ids), to_device(prompt_speech_attention_mask)
    if prompt_speech_attention_mask is not None:
        raise ValueError("prompt_speech_attention_mask is only meaningful with a padded tensor of prompt_speech_ids.")
    rows = [list(row) for row in prompt_speech_ids]
    if len(rows) != batch_size:
        raise ValueError(f"prompt_speech_ids has {len(rows)} rows for a batch of {batch_size}.")
    ids, mask = right_pad(rows, 0, device)
    return ids, mask


def _length_bounds(
    target_lengths: torch.Tensor,
    min_len_ratio: float,
    max_len_ratio: float,
    min_new_tokens: int | None,
    max_new_tokens: int | None,
    max_tokens_cap: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    # int() truncation as upstream: min_len = int(n * ratio).
    min_len = torch.floor(target_lengths.double() * min_len_ratio).long()
    max_len = torch.floor(target_lengths.double() * max_len_ratio).long()
    if min_new_tokens is not None:
        min_len = torch.full_like(min_len, min_new_tokens)
    if max_new_tokens is not None:
        max_len = torch.full_like(max_len, max_new_tokens)
    if max_tokens_cap is not None:
        max_len = max_len.clamp_max(max_tokens_cap)
    min_len = torch.minimum(min_len, max_len)
    if (max_len < 1).any():
        bad = (max_len < 1).nonzero().flatten().tolist()
        raise ValueError(
            f"Samples {bad} would get max_len < 1 (target text tokens {target_lengths[bad].tolist()}, "
            f"max_len_ratio={max_len_ratio}, max_new_tokens={max_new_tokens}). Give them text after <|endofprompt|> "
            "or raise max_len_ratio / max_new_tokens."
        )
    return min_len, max_len


@torch.no_grad()
def generate_speech_tokens(
    model,
    text_ids: torch.Tensor | Sequence[Sequence[int]],
    text_attention_mask: torch.Tensor | None = None,
    *,
    top_p: float = 0.8,
    top_k: int = 25,
    win_size: int = 10,
    tau_r: float = 0.1,
    exclude_repeated: bool = True,
    prompt_speech_ids: torch.Tensor | Sequence[Sequence[int]] | None = None,
    prompt_speech_attention_mask: torch.Tensor | None = None,
    min_len_ratio: float = 2.0,
    max_len_ratio: float = 20.0,
    text_lengths_for_ratio: torch.Tensor | Sequence[int] | None = None,
    prompt_end_token_id: int | None = None,
    do_sample: bool = True,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    min_new_tokens: int | None = None,
    max_new_tokens: int | None = None,
    max_tokens_cap: int | None = None,
    show_progress: bool = False,
) -> list[list[int]]:
    """Decode speech tokens for a batch of text prompts with CosyVoice2's sampling rules.

    Args:
        model: a `CosyVoice2LM` (or a PEFT model around one). Under DeepSpeed ZeRO-3 or DDP,
            pass the module yielded by :func:`unwrap_for_generation`.
        text_ids (`torch.LongTensor` of shape `(batch, text_len)` or list of id lists):
            Text token ids, padded on either side (the mask says which are real), e.g. the
            `text_ids` of `DataCollatorForCosyVoice2` (instruction + `<|endofprompt|>` + text).
        text_attention_mask (`torch.Tensor` of shape `(batch, text_len)`, *optional*):
            1 for real tokens. Defaults to all ones.
        top_p, top_k, win_size, tau_r, exclude_repeated: repetition-aware sampling parameters (see
            :func:`ras_sampling`); `exclude_repeated=False` selects the pre-2026 re-draw rule.
        prompt_speech_ids (`torch.LongTensor` of shape `(batch, prompt_len)` or list of id lists, *optional*):
            Zero-shot (voice cloning) prompt: speech tokens of a prompt utterance, read after `task_id`;
            generation continues them. Put the prompt's transcript before the text in `text_ids` and pass the
            target text counts in `text_lengths_for_ratio` (the transcript must not count towards the bounds).
            A row with no prompt speech (empty list / all-zero mask) is decoded as without.
        prompt_speech_attention_mask (`torch.Tensor`, *optional*): 1 for real prompt speech tokens
            (right-padded); only with a tensor `prompt_speech_ids`.
        min_len_ratio (`float`, defaults to 2.0), max_len_ratio (`float`, defaults to 20.0):
            Speech-length bounds per sample as multiples of its target text tokens.
        text_lengths_for_ratio (*optional*): the target text token counts per sample. Defaults to
            the count after `prompt_end_token_id` (when given) or to all real text tokens.
        prompt_end_token_id (`int`, *optional*): id of `<|endofprompt|>`, so that instruction
            tokens do not count towards the length bounds.
        do_sample (`bool`, defaults to `True`): `False` decodes greedily (arg-max after masking).
        use_cache (`bool`, defaults to `True`): `False` re-encodes the whole sequence at every step
            (slow; kept as the reference the cached path is tested against).
        generator / seed: randomness. `seed` builds a fresh `torch.Generator` on the model's device.
        min_new_tokens / max_new_tokens (`int`, *optional*): override the ratio-derived bounds for
            every sample.
        max_tokens_cap (`int`, *optional*): an upper bound applied on top of those bounds (e.g. the longest
            sequence a reward model can read), keeping the ratio rule below it.
        show_progress (`bool`, defaults to `False`): tqdm bar over decoding steps.

    Returns:
        `list[list[int]]`: per sample, the generated speech ids, without the stop token.
    """
    if generator is not None and seed is not None:
        raise ValueError("Pass either `generator` or `seed`, not both.")
    if do_sample:
        _check_sampling_args(top_p, top_k, win_size, tau_r)
    policy = _resolve_policy(model)
    config = policy.config
    device = policy.speech_embedding.weight.device
    stop_token_ids = torch.as_tensor(list(config.stop_token_ids), device=device)
    ids, mask = _as_padded_batch(text_ids, text_attention_mask, device)
    batch_size = ids.shape[0]
    if batch_size == 0:
        return []
    prompt_ids, prompt_mask = _as_prompt_speech(prompt_speech_ids, prompt_speech_attention_mask, batch_size, device)
    text_vocab = policy.model.embed_tokens.num_embeddings
    real_ids = ids[mask.bool()]
    if real_ids.numel() and (real_ids.min() < 0 or real_ids.max() >= text_vocab):
        raise ValueError(
            f"text_ids contain ids outside the text vocabulary [0, {text_vocab}) "
            f"(min {int(real_ids.min())}, max {int(real_ids.max())}); was the prompt built with another tokenizer?"
        )
    empty = (mask.sum(dim=-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"Samples {empty} have no text tokens; every prompt needs text to speak.")

    if text_lengths_for_ratio is None:
        target_lengths = count_target_text_tokens(ids, mask, prompt_end_token_id)
    else:
        target_lengths = torch.as_tensor(text_lengths_for_ratio, device=device).long().flatten()
        if target_lengths.shape[0] != batch_size:
            raise ValueError(
                f"text_lengths_for_ratio has {target_lengths.shape[0]} entries for a batch of {batch_size}."
            )
    min_len, max_len = _length_bounds(
        target_lengths, min_len_ratio, max_len_ratio, min_new_tokens, max_new_tokens, max_tokens_cap
    )

    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    was_training = policy.training
    policy.eval()  # dropout off: sampling randomness comes from `generator` alone
    try:
        return _decode(
            policy,
            ids,
            mask,
            prompt_ids,
            prompt_mask,
            min_len,
            max_len,
            stop_token_ids,
            do_sample=do_sample,
            use_cache=use_cache,
            generator=generator,
            sampling_kwargs={
                "top_p": top_p,
                "top_k": top_k,
                "win_size": win_size,
                "tau_r": tau_r,
                "exclude_repeated": exclude_repeated,
            },
            show_progress=show_progress,
        )
    finally:
        policy.train(was_training)


def _decode(
    policy,
    ids: torch.Tensor,
    mask: torch.Tensor,
    prompt_ids: torch.Tensor | None,
    prompt_mask: torch.Tensor | None,
    min_len: torch.Tensor,
    max_len: torch.Tensor,
    stop_token_ids: torch.Tensor,
    *,
    do_sample: bool,
    use_cache: bool,
    generator: torch.Generator | None,
    sampling_kwargs: dict,
    show_progress: bool,
) -> list[list[int]]:
    batch_size = ids.shape[0]
    device = ids.device
    steps = int(max_len.max())
    prompt_embeds, prompt_mask = policy.embed_prompt(ids, mask, prompt_ids, prompt_mask)
    prompt_mask = prompt_mask.long()

    generated = torch.full((batch_size, steps), -1, dtype=torch.long, device=device)
    lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    # Fed to finished rows so their (ignored) continuation stays a valid embedding lookup.
    filler_id = int(stop_token_ids[0])

    # Positions count real tokens only, so a left-padded prompt gets the same rotary positions as unpadded.
    position_ids = (prompt_mask.cumsum(dim=-1) - 1).clamp(min=0)
    outputs = policy.model(
        inputs_embeds=prompt_embeds, attention_mask=prompt_mask, position_ids=position_ids, use_cache=use_cache
    )
    cache = _output_cache(outputs) if use_cache else None
    last_hidden = outputs.last_hidden_state[:, -1]
    all_embeds, all_mask = prompt_embeds, prompt_mask
    is_stop_id = None

    for step in tqdm(range(steps), desc="generating speech tokens", disable=not show_progress):
        logits = policy.speech_logits(last_hidden).float()
        if is_stop_id is None:
            is_stop_id = torch.isin(torch.arange(logits.shape[-1], device=device), stop_token_ids)
        # Before min_len no stop id may be drawn (upstream re-draws any id >= speech_token_size).
        too_early = (step < min_len)[:, None] & is_stop_id[None, :]
        logits = logits.masked_fill(too_early, float("-inf"))
        if do_sample:
            probs = logits.softmax(dim=-1)
            next_ids = _ras_sample(probs, generated[:, :step], generator=generator, **sampling_kwargs)
        else:
            next_ids = logits.argmax(dim=-1)
        next_ids = torch.where(finished, torch.full_like(next_ids, filler_id), next_ids)

        is_stop = torch.isin(next_ids, stop_token_ids) & ~finished
        emits = ~finished & ~is_stop
        generated[:, step] = torch.where(emits, next_ids, torch.full_like(next_ids, -1))
        lengths += emits.long()
        finished |= is_stop | (lengths >= max_len)
        if bool(finished.all()):
            break

        new_embeds = policy.speech_embedding(next_ids)[:, None, :]
        all_mask = torch.cat([all_mask, torch.ones_like(all_mask[:, :1])], dim=-1)
        if use_cache:
            # The mask must cover cached + new positions (the known upstream pitfall), else
            # the new token attends to the left padding of shorter prompts.
            outputs = policy.model(
                inputs_embeds=new_embeds,
                attention_mask=all_mask,
                position_ids=all_mask.sum(dim=-1, keepdim=True) - 1,
                use_cache=True,
                **{_CACHE_KEYWORD: cache},
            )
            cache = _output_cache(outputs)
        else:
            all_embeds = torch.cat([all_embeds, new_embeds], dim=1)
            outputs = policy.model(
                inputs_embeds=all_embeds,
                attention_mask=all_mask,
                position_ids=(all_mask.cumsum(dim=-1) - 1).clamp(min=0),
                use_cache=False,
            )
        last_hidden = outputs.last_hidden_state[:, -1]

    return [generated[b, : int(lengths[b])].tolist() for b in range(batch_size)]


@contextlib.contextmanager
def unwrap_for_generation(model, accelerator, gather_deepspeed3_params: bool = True) -> Iterator:
    """Yield the plain `CosyVoice2LM` inside a DeepSpeed/DDP/PEFT-wrapped training model, ready to generate.

    Thin layer over TRL's `unwrap_model_for_generation`: under ZeRO-3 the parameters are gathered
    on every rank for the duration (all ranks must enter together), gradient checkpointing is
    paused, and a PEFT wrapper is stripped (its LoRA layers stay active).
    """
    from trl.models import unwrap_model_for_generation

    with unwrap_model_for_generation(
        model, accelerator, gather_deepspeed3_params=gather_deepspeed3_params
    ) as unwrapped:
        yield _resolve_policy(unwrapped)
