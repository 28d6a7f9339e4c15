"""Frozen copies of models that stay right under DeepSpeed ZeRO-3: the KL reference policy of DiffRO / RRPO.

A full fine-tuning run keeps a frozen copy of the policy as its reference; a PEFT run either disables its adapter
(a fresh adapter starts at the base model) or keeps a frozen copy of an adapter that arrived trained. A sharded
model is not `deepcopy`-ed: it is rebuilt from its config and filled one gathered parameter at a time, so no rank
ever holds the whole unsharded model.
"""

from __future__ import annotations

import contextlib
import copy
import logging

import torch
from transformers import PreTrainedModel


logger = logging.getLogger(__name__)


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


def reference_copy(policy: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of a fully fine-tuned policy: ZeRO-3 shards stay shards (rebuilt partitioned, then filled)."""
    if not is_zero3_partitioned(policy):
        return freeze(copy.deepcopy(policy))
    return freeze(rebuilt_copy(policy, partitioned=True))


@contextlib.contextmanager
def use_adapter(model, adapter_name: str):
    """Run `model` (a `PeftModel`) with `adapter_name` active, then restore the adapter and every `requires_grad`.

    PEFT's `set_adapter` marks the active adapter trainable and the others frozen; the flags are put back so that
    the frozen reference adapter never becomes trainable and the trained one never stops being so.
    """
    previous = model.active_adapter
    trainable = {name: param.requires_grad for name, param in model.named_parameters()}
    model.set_adapter(adapter_name)
    try:
        yield
    finally:
        model.set_adapter(previous)
        for name, param in model.named_parameters():
            param.requires_grad_(trainable[name])


def add_reference_adapter(model, name: str = "ref") -> str | None:
    """Copy the active (already trained) adapter of a `PeftModel` into a frozen adapter `name`, the KL's reference.

    Returns `name`, or None when PEFT cannot hold the copy (then the reference is the model with its adapter
    disabled).
    """
    active = model.active_adapter
    config = model.peft_config[active]
    if getattr(config, "target_parameters", None):
        # PEFT cannot hold a second adapter next to one with `target_parameters`.
        logger.warning(
            "The adapter uses `target_parameters`, next to which PEFT cannot add a frozen copy: the KL reference "
            "is the base model with the adapter disabled, which equals the adapter's start only if it is fresh."
        )
        return None
    if name in model.peft_config:
        raise ValueError(
            f"The PEFT model already has an adapter named {name!r}; DiffROTrainer adds its frozen reference copy "
            "under that name. Delete or rename it (model.delete_adapter) first."
        )
    trainable = {param_name: param.requires_grad for param_name, param in model.named_parameters()}
    model.add_adapter(name, config)
    if model.active_adapter != active:
        model.set_adapter(active)
    params = dict(model.named_parameters())
    pairs = []
    for param_name, param in params.items():
        if f".{name}." in param_name:
            pairs.append((params[param_name.replace(f".{name}.", f".{active}.")], param))
    copy_parameters(pairs)
    for param_name, param in params.items():
        param.requires_grad_(trainable.get(param_name, False))  # the new "ref" parameters stay frozen
    return name


__all__ = [
    "add_reference_adapter",
    "copy_parameters",
    "freeze",
    "full_weight_copy",
    "is_zero3_partitioned",
    "rebuilt_copy",
    "reference_copy",
    "use_adapter",
    "zero3_init_disabled",
]
