"""Frozen models that stay right under DeepSpeed ZeRO-3: reward models and judges with full weights on every rank,
and the means to copy a sharded model one parameter at a time (used for DiffRO's KL reference too).

A sharded model is not `deepcopy`-ed: it is rebuilt from its config and filled one gathered parameter at a time, so no
rank ever holds the whole unsharded model.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import PreTrainedModel


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no parameter gradients: the reward model, judge and reference are read, never trained."""
    module.eval()
    module.requires_grad_(False)
    return module


def is_zero3_partitioned(module: torch.nn.Module) -> bool:
    """Whether `module` holds DeepSpeed ZeRO-3 shards (built inside `deepspeed.zero.Init`) instead of full tensors."""
    return any(hasattr(param, "ds_id") for param in module.parameters())


@contextlib.contextmanager
def zero3_init_disabled():
    """`from_pretrained` / `_from_config` build full, unpartitioned weights inside this block, even under ZeRO-3.

    Transformers builds a model inside `deepspeed.zero.Init` while a ZeRO-3 `HfDeepSpeedConfig` is registered
    (`zero3_init_flag: true`); the registration is a weak reference that the training arguments keep alive, so it
    is lifted here and put back afterwards.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    # Transformers exposes set/unset but no getter of the registered object (deepspeed_config() returns a dict).
    registered = hf_deepspeed._hf_deepspeed_config_weak_ref
    config = registered() if registered is not None else None
    if config is None or not config.is_zero3():
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def copy_parameters(pairs: list[tuple[torch.nn.Parameter, torch.nn.Parameter]]) -> None:
    """``target.copy_(source)`` for each pair; ZeRO-3 shards are gathered one pair at a time (collective).

    One pair at a time keeps the peak memory at one full parameter, so a sharded copy is made without ever holding
    a whole unsharded model.
    """
    for source, target in pairs:
        partitioned = [param for param in (source, target) if hasattr(param, "ds_id")]
        if not partitioned:
            with torch.no_grad():
                target.copy_(source)
            continue
        import deepspeed  # only here: shards exist only when DeepSpeed is installed and running

        # modifier_rank=0: rank 0's copy is re-partitioned to every rank (all ranks hold the same source values).
        with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=0), torch.no_grad():
            target.copy_(source)


def rebuilt_copy(module: PreTrainedModel, partitioned: bool) -> PreTrainedModel:
    """A new `type(module)` from its config, filled with `module`'s values one parameter at a time.

    `partitioned`: built inside `deepspeed.zero.Init` (ZeRO-3 registered), so the copy is sharded too; else with
    full weights on every rank.
    """
    dtype = next(module.parameters()).dtype
    with contextlib.nullcontext() if partitioned else zero3_init_disabled():
        rebuilt = type(module)._from_config(module.config, dtype=dtype)
    sources = dict(module.named_parameters())
    copy_parameters([(sources[name], param) for name, param in rebuilt.named_parameters()])
    source_buffers = dict(module.named_buffers())
    with torch.no_grad():
        for name, buffer in rebuilt.named_buffers():
            buffer.copy_(source_buffers[name])  # ZeRO-3 never partitions buffers
    return rebuilt


def full_weight_copy(module: torch.nn.Module) -> torch.nn.Module:
    """An unpartitioned copy of a ZeRO-3-partitioned `PreTrainedModel` (gathered one parameter at a time)."""
    if not isinstance(module, PreTrainedModel):
        raise TypeError(
            f"The {type(module).__name__} holds ZeRO-3 shards and is not a PreTrainedModel, so it cannot be rebuilt "
            "with full weights; pass the folder it was saved to instead."
        )
    return rebuilt_copy(module, partitioned=False)


__all__ = [
    "copy_parameters",
    "freeze",
    "full_weight_copy",
    "is_zero3_partitioned",
    "rebuilt_copy",
    "zero3_init_disabled",
]
