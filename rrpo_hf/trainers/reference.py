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

from ..models.frozen import (  # noqa: F401  (re-exported: the trainers import them from here)
    copy_parameters,
    freeze,
    full_weight_copy,
    is_zero3_partitioned,
    rebuilt_copy,
    zero3_init_disabled,
)


logger = logging.getLogger(__name__)


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
