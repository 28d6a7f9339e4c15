"""Export a policy that is being trained (DDP, DeepSpeed ZeRO-3, LoRA) as CosyVoice2's ``llm.pt``."""

from __future__ import annotations

import copy
import os

from accelerate.utils import is_peft_model

from .checkpoint import save_cosyvoice_checkpoint


def export_training_policy_to_cosyvoice(model, accelerator, path: str | os.PathLike) -> str | None:
    """Write the policy inside a prepared training `model` as an ``llm.pt`` for CosyVoice2's flow and vocoder.

    Every process must call it: ZeRO-3 shards are gathered on all ranks together. A LoRA adapter is merged into a
    copy, so training can go on with the adapter afterwards. The main process writes the file and gets its path, the
    others get ``None``; all return once it is written.
    """
    from trl.models import unwrap_model_for_generation

    written = None
    with unwrap_model_for_generation(model, accelerator) as unwrapped:
        if accelerator.is_main_process:
            policy = unwrapped
            if is_peft_model(policy):
                policy = copy.deepcopy(policy).merge_and_unload()
            written = save_cosyvoice_checkpoint(policy, path)
    accelerator.wait_for_everyone()
    return written


__all__ = ["export_training_policy_to_cosyvoice"]
