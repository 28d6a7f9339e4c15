"""What `save_model` / `push_to_hub` write for a policy trained with a LoRA adapter: merged weights or the adapter.

A folder holds exactly one of them. Writing both side by side (a merged `model.safetensors` next to an
`adapter_model.safetensors`) makes `from_pretrained` pick one silently and the Hub page describe the other, so a save
of one kind removes the other kind's files left by an earlier save in that folder (and nothing else).

Checkpoints (`checkpoint-N/`) always hold the adapter: resuming needs it, and it is all the optimizer state refers to.
"""

from __future__ import annotations

import copy
import logging
import os
import re

import torch

from ..utils.saving import apply_default_mode


logger = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
FULL_MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_SHARD_PATTERN = re.compile(r"(model|pytorch_model)-\d{5}-of-\d{5}\.(safetensors|bin)")
TRAINING_ARGS_NAME = "training_args.bin"  # the name `Trainer` uses


# The package's one PEFT check (a `peft.PeftModel`, possibly inside a DDP / compile wrapper).
from accelerate.utils import is_peft_model  # noqa: E402


def remove_stale_model_files(output_dir: str | os.PathLike, kept: str) -> list[str]:
    """Delete the known model files of the kind *not* in `kept` ("adapter" or "full") from `output_dir`.

    Returns the removed names. Tokenizer files, cards, metrics and unknown files are never touched.
    """
    if kept not in ("adapter", "full"):
        raise ValueError(f"kept must be 'adapter' or 'full', got {kept!r}.")
    if not os.path.isdir(output_dir):
        return []
    removed = []
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if not os.path.isfile(path):
            continue
        stale = name in ADAPTER_FILES if kept == "full" else name in FULL_MODEL_FILES or _SHARD_PATTERN.fullmatch(name)
        if stale:
            os.remove(path)
            removed.append(name)
    if removed:
        logger.info(f"Removed {removed} of an earlier save from {output_dir}: the folder now holds the {kept} model.")
    return removed


class MergedSaveMixin:
    """`save_model` / `push_to_hub` of a LoRA-trained model write either the merged model or the adapter.

    Put it before `transformers.Trainer` in the bases. With a PEFT model and `save_merged` true (the attribute, or
    else `args.save_merged`), the final save merges a copy of the adapter into the base weights and writes a plain
    model that `from_pretrained` of the base class loads; otherwise the adapter is written and its
    `adapter_config.json` names the base model. Either way the other kind's stale files are removed, and
    `push_to_hub` (which calls `save_model`) uploads the same thing. Checkpoints always hold the adapter.
    """

    #: Overrides `args.save_merged` when set (for trainers whose arguments have no such field).
    save_merged: bool | None = None
    _saving_checkpoint = False

    def _merges_on_save(self) -> bool:
        wanted = self.save_merged if self.save_merged is not None else getattr(self.args, "save_merged", False)
        return bool(wanted) and is_peft_model(self.accelerator.unwrap_model(self.model))

    @property
    def saved_format(self) -> str:
        """What the save in progress (or the next `save_model`) writes: "merged", "adapter" or "full"."""
        if not is_peft_model(self.accelerator.unwrap_model(self.model)):
            return "full"
        return "merged" if self._merges_on_save() and not self._saving_checkpoint else "adapter"

    def check_save_merged_supported(self) -> None:
        """Raise before training if the final merged save could not run (ZeRO-3 shards the base weights)."""
        if (
            self._merges_on_save()
            and self.is_deepspeed_enabled
            and self.accelerator.state.deepspeed_plugin.zero_stage == 3
        ):
            raise ValueError(
                "save_merged needs the full base weights to merge the LoRA adapter, but DeepSpeed ZeRO-3 shards them. "
                "Pass --save_merged false (the adapter is saved and names its base model) or use ZeRO-2."
            )

    def train(self, *args, **kwargs):
        # Fail before the first step, not after the whole run, when the final merged save cannot work.
        self.check_save_merged_supported()
        return super().train(*args, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:
        self._saving_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._saving_checkpoint = False

    def _helper_adapters(self) -> list[str]:
        """Adapters of the PEFT model besides the trained one (e.g. DiffRO's frozen "ref" copy)."""
        model = self.accelerator.unwrap_model(self.model)
        return [name for name in getattr(model, "peft_config", {}) if name != model.active_adapter]

    def _save_active_adapter(self, output_dir: str, state_dict) -> None:
        # PEFT saves every adapter (others into sub-folders); the result of the run is the trained one alone.
        if not self.args.should_save:
            return
        model = self.accelerator.unwrap_model(self.model)
        os.makedirs(output_dir, exist_ok=True)
        model.save_pretrained(output_dir, state_dict=state_dict, selected_adapters=[model.active_adapter])
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))
        remove_stale_model_files(output_dir, kept="adapter")
        apply_default_mode(os.path.join(output_dir, name) for name in ADAPTER_FILES)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        kind = self.saved_format
        if kind == "adapter" and not self._saving_checkpoint and self._helper_adapters():
            self._save_active_adapter(output_dir, state_dict)
            return
        if kind != "merged":
            super()._save(output_dir, state_dict=state_dict)
            if self.args.should_save:
                remove_stale_model_files(output_dir, kept="adapter" if kind == "adapter" else "full")
                if kind == "adapter":  # PEFT writes them through safetensors' 0600 temporary files
                    apply_default_mode(os.path.join(output_dir, name) for name in ADAPTER_FILES)
            return
        self.check_save_merged_supported()
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        # Merge a copy: the trainer keeps training (or evaluating) its adapter after the save.
        merged = copy.deepcopy(self.accelerator.unwrap_model(self.model)).merge_and_unload()
        merged.save_pretrained(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))
        remove_stale_model_files(output_dir, kept="full")


__all__ = ["ADAPTER_FILES", "FULL_MODEL_FILES", "MergedSaveMixin", "remove_stale_model_files"]
