"""Loading a CosyVoice2 policy with its text tokenizer, and its LoRA configuration, as the example scripts need them.

A policy is a CosyVoice2 release (a model dir with ``llm.pt`` + ``CosyVoice-BlankEN/``, or the ``llm.pt``
itself), a ``save_pretrained`` folder of this library (``config.json`` + weights + tokenizer), or a LoRA adapter
folder (``adapter_config.json`` naming its base model, e.g. ``examples/sft.py --save_merged false``), which loads as a
trainable `peft.PeftModel` on that base.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoint import COSYVOICE_BLANK_EN_DIRNAME, load_cosyvoice_checkpoint
from .modeling_cosyvoice2 import CosyVoice2LM
from .tokenization import COSYVOICE2_END_OF_PROMPT, load_cosyvoice2_tokenizer


#: LoRA targets: every projection of the Qwen2 backbone (the speech head and embeddings stay frozen).
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def is_cosyvoice_release(path: str | os.PathLike) -> bool:
    """An ``llm.pt`` file, or a folder with ``llm.pt`` and no ``config.json`` (a ``save_pretrained`` folder that
    also carries an exported ``llm.pt`` loads as the folder: it holds the tokenizer too)."""
    path = Path(path)
    return path.suffix == ".pt" or ((path / "llm.pt").is_file() and not (path / "config.json").is_file())


def is_adapter_folder(path: str | os.PathLike) -> bool:
    """A PEFT adapter folder (``adapter_config.json``, no ``config.json`` of a full model)."""
    path = Path(path)
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def load_cosyvoice2_lm_and_tokenizer(
    model_path: str | os.PathLike,
    tokenizer_path: str | os.PathLike | None = None,
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
):
    """``(CosyVoice2LM or CosyVoice3LM, text tokenizer)`` from a release or a ``save_pretrained`` folder.

    The tokenizer comes from ``tokenizer_path`` when given, else from the release's ``CosyVoice-BlankEN`` or the
    folder itself. ``dtype`` is a torch dtype, its name (``"bfloat16"``) or ``"auto"``. Raises ``ValueError`` when
    the tokenizer has more ids than the model's text embedding has rows.
    """
    from transformers import AutoTokenizer

    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    model_path = Path(model_path)
    if is_adapter_folder(model_path):
        return _load_adapter_policy(model_path, tokenizer_path, dtype, attn_implementation)
    if is_cosyvoice_release(model_path):
        # A CosyVoice2 or a CosyVoice3 llm.pt: the file's keys say which (CosyVoice3 reads its own special tokens).
        model = load_cosyvoice_checkpoint(model_path)
        if dtype not in (None, "auto"):
            model = model.to(dtype)
        release_dir = model_path.parent if model_path.suffix == ".pt" else model_path
        blank_en = Path(tokenizer_path or release_dir / COSYVOICE_BLANK_EN_DIRNAME)
        if (blank_en / "vocab.json").is_file():
            from ..cosyvoice3.tokenization import load_cosyvoice3_tokenizer

            load_release_tokenizer = (
                load_cosyvoice3_tokenizer if model.config.cosyvoice_version == 3 else load_cosyvoice2_tokenizer
            )
            tokenizer = load_release_tokenizer(blank_en)
        else:
            tokenizer = AutoTokenizer.from_pretrained(blank_en)
        if model.config.cosyvoice_version == 3:
            # llm.pt does not say which text id is <|endofprompt|> (upstream hard-codes 151646): the tokenizer does.
            model.config.end_of_prompt_id = tokenizer.convert_tokens_to_ids(COSYVOICE2_END_OF_PROMPT)
    else:
        from transformers import AutoModel

        kwargs = {"dtype": dtype} if dtype is not None else {}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        # AutoModel: a save_pretrained folder of a CosyVoice2LM or a CosyVoice3LM, as its config.json says.
        model = AutoModel.from_pretrained(str(model_path), **kwargs)
        if not isinstance(model, CosyVoice2LM):
            raise ValueError(
                f"{model_path} holds a {type(model).__name__}, not a CosyVoice2 / CosyVoice3 LM; pass a policy folder."
            )
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path or model_path))
    if model.config.cosyvoice_version == 3:
        end_id = tokenizer.convert_tokens_to_ids(COSYVOICE2_END_OF_PROMPT)
        if end_id != model.config.end_of_prompt_id:
            raise ValueError(
                f"The tokenizer's <|endofprompt|> is id {end_id} but the CosyVoice3 model expects "
                f"end_of_prompt_id={model.config.end_of_prompt_id}; they do not belong together (check "
                "--tokenizer_path)."
            )
    if len(tokenizer) > model.config.llm_config.vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's text embedding only "
            f"{model.config.llm_config.vocab_size}; they do not belong together (check --tokenizer_path)."
        )
    return model, tokenizer


def _load_adapter_policy(adapter_path: Path, tokenizer_path, dtype, attn_implementation):
    """The base model its ``adapter_config.json`` names, with the adapter on top (trainable: training continues)."""
    import json

    from peft import PeftModel

    adapter_config = json.loads((adapter_path / "adapter_config.json").read_text(encoding="utf-8"))
    base = adapter_config.get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"{adapter_path / 'adapter_config.json'} names no base model (base_model_name_or_path); save the adapter "
            "with its base named, or pass the merged model folder instead."
        )
    # The tokenizer saved beside the adapter is the one the adapter was trained with.
    tokenizer_source = tokenizer_path or (adapter_path if (adapter_path / "tokenizer_config.json").is_file() else None)
    base_model, tokenizer = load_cosyvoice2_lm_and_tokenizer(base, tokenizer_source, dtype, attn_implementation)
    model = PeftModel.from_pretrained(base_model, str(adapter_path), is_trainable=True)
    return model, tokenizer


def lora_config_from_model_args(model_args):
    """A `peft.LoraConfig` for the CosyVoice2 backbone from TRL's `ModelConfig` (``--lora_r`` …).

    Unlike `trl.get_peft_config` it sets no ``task_type``: PEFT's CAUSAL_LM wrapper would rename the policy's inputs
    to ``input_ids``; the plain `PeftModel` passes them on.
    """
    from peft import LoraConfig

    targets = model_args.lora_target_modules or DEFAULT_LORA_TARGETS
    if isinstance(targets, str) and targets != "all-linear":
        # A single module name from the command line; PEFT would read a bare string as a full-match regex.
        targets = [targets]
    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets,
        modules_to_save=model_args.lora_modules_to_save,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
        bias="none",
    )


__all__ = [
    "DEFAULT_LORA_TARGETS",
    "is_adapter_folder",
    "is_cosyvoice_release",
    "load_cosyvoice2_lm_and_tokenizer",
    "lora_config_from_model_args",
]
