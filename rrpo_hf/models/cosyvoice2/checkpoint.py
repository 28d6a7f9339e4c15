"""Import / export of CosyVoice2's released LM checkpoint (``llm.pt``).

CosyVoice2 stores its ``Qwen2LM`` as a plain ``torch.save(state_dict)`` that it later loads with
``strict=True``. Key mapping (CosyVoice -> :class:`CosyVoice2LM`)::

    llm_embedding.weight             -> llm_embedding.weight
    llm.model.model.<backbone key>   -> model.<backbone key>
    llm.model.lm_head.weight         -> (dropped: tied copy of the text embedding, never used for speech)
    llm_decoder.{weight,bias}        -> llm_decoder.{weight,bias}
    speech_embedding.weight          -> speech_embedding.weight

CosyVoice3's ``CosyVoice3LM`` stores the same keys without ``llm_embedding.weight`` and ``llm_decoder.bias`` (its sos
and task_id are rows of ``speech_embedding``, its head has no bias), with ``speech_token_size + 200`` speech rows.
:func:`load_cosyvoice_checkpoint` tells the two apart by these keys and builds the matching model.

Both directions are strict: every key must be used, none may be missing, shapes must match the config.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import Qwen2Config
from transformers.initialization import no_init_weights

from ...utils.saving import atomic_write
from .configuration_cosyvoice2 import NUM_LLM_EMBEDDING_ROWS, CosyVoice2LMConfig
from .modeling_cosyvoice2 import CosyVoice2LM


logger = logging.getLogger(__name__)

COSYVOICE_LLM_FILENAME = "llm.pt"
COSYVOICE_BLANK_EN_DIRNAME = "CosyVoice-BlankEN"
_BACKBONE_PREFIX_COSYVOICE = "llm.model.model."
_BACKBONE_PREFIX_HF = "model."
_TIED_TEXT_HEAD_KEY = "llm.model.lm_head.weight"
_TEXT_EMBEDDING_KEY = "llm.model.model.embed_tokens.weight"
# Module order of CosyVoice's Qwen2LM.__init__, so exported files list keys exactly as the release does.
_HEAD_KEYS_AFTER_BACKBONE = ("llm_decoder.weight", "llm_decoder.bias", "speech_embedding.weight")


class CosyVoiceCheckpointError(ValueError):
    """An ``llm.pt`` does not match the CosyVoice2 LM layout / the given config."""


def expected_cosyvoice_shapes(config: CosyVoice2LMConfig) -> OrderedDict[str, tuple[int, ...]]:
    """Every key of a CosyVoice2 / CosyVoice3 ``llm.pt`` for this config with its shape, in the released order."""
    llm = config.llm_config
    hidden = llm.hidden_size
    head_dim = getattr(llm, "head_dim", None) or hidden // llm.num_attention_heads
    kv_dim = llm.num_key_value_heads * head_dim
    q_dim = llm.num_attention_heads * head_dim
    with_llm_embedding = config.cosyvoice_version == 2  # CosyVoice3: no llm_embedding, a bias-free head
    shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()
    if with_llm_embedding:
        shapes["llm_embedding.weight"] = (NUM_LLM_EMBEDDING_ROWS, hidden)
    shapes[_TEXT_EMBEDDING_KEY] = (llm.vocab_size, hidden)
    for i in range(llm.num_hidden_layers):
        layer = f"{_BACKBONE_PREFIX_COSYVOICE}layers.{i}."
        shapes[layer + "self_attn.q_proj.weight"] = (q_dim, hidden)
        shapes[layer + "self_attn.q_proj.bias"] = (q_dim,)
        shapes[layer + "self_attn.k_proj.weight"] = (kv_dim, hidden)
        shapes[layer + "self_attn.k_proj.bias"] = (kv_dim,)
        shapes[layer + "self_attn.v_proj.weight"] = (kv_dim, hidden)
        shapes[layer + "self_attn.v_proj.bias"] = (kv_dim,)
        shapes[layer + "self_attn.o_proj.weight"] = (hidden, q_dim)
        shapes[layer + "mlp.gate_proj.weight"] = (llm.intermediate_size, hidden)
        shapes[layer + "mlp.up_proj.weight"] = (llm.intermediate_size, hidden)
        shapes[layer + "mlp.down_proj.weight"] = (hidden, llm.intermediate_size)
        shapes[layer + "input_layernorm.weight"] = (hidden,)
        shapes[layer + "post_attention_layernorm.weight"] = (hidden,)
    shapes[_BACKBONE_PREFIX_COSYVOICE + "norm.weight"] = (hidden,)
    shapes[_TIED_TEXT_HEAD_KEY] = (llm.vocab_size, hidden)
    shapes["llm_decoder.weight"] = (config.speech_vocab_size, hidden)
    if with_llm_embedding:
        shapes["llm_decoder.bias"] = (config.speech_vocab_size,)
    shapes["speech_embedding.weight"] = (config.speech_vocab_size, hidden)
    return shapes


def cosyvoice_key_to_hf(key: str) -> str | None:
    """Name of a CosyVoice ``llm.pt`` key in :class:`CosyVoice2LM` (None for the dropped tied text head)."""
    if key == _TIED_TEXT_HEAD_KEY:
        return None
    if key.startswith(_BACKBONE_PREFIX_COSYVOICE):
        return _BACKBONE_PREFIX_HF + key[len(_BACKBONE_PREFIX_COSYVOICE) :]
    return key


def hf_key_to_cosyvoice(key: str) -> str:
    if key.startswith(_BACKBONE_PREFIX_HF):
        return _BACKBONE_PREFIX_COSYVOICE + key[len(_BACKBONE_PREFIX_HF) :]
    return key


def _check_layout(state_dict: Mapping[str, torch.Tensor], config: CosyVoice2LMConfig, what: str) -> None:
    expected = expected_cosyvoice_shapes(config)
    missing = [key for key in expected if key not in state_dict]
    unused = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key}: {tuple(state_dict[key].shape)} != expected {shape}"
        for key, shape in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != shape
    ]
    if missing or unused or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys ({len(missing)}): {missing}")
        if unused:
            problems.append(f"unused keys ({len(unused)}): {unused}")
        if mismatched:
            problems.append(f"shape mismatches ({len(mismatched)}): {mismatched}")
        raise CosyVoiceCheckpointError(
            f"{what} does not match the CosyVoice{config.cosyvoice_version} LM layout for this config (hidden "
            f"{config.llm_config.hidden_size}, {config.llm_config.num_hidden_layers} layers, speech vocab "
            f"{config.speech_vocab_size}):\n  " + "\n  ".join(problems) + "\nCheck that the checkpoint, "
            "`CosyVoice-BlankEN/config.json` and `speech_token_size` belong together."
        )


def convert_cosyvoice_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: CosyVoice2LMConfig
) -> OrderedDict[str, torch.Tensor]:
    """CosyVoice ``llm.pt`` state dict -> :class:`CosyVoice2LM` state dict (strict)."""
    _check_layout(state_dict, config, "The CosyVoice checkpoint")
    if not torch.equal(state_dict[_TIED_TEXT_HEAD_KEY], state_dict[_TEXT_EMBEDDING_KEY]):
        # The speech LM never reads the text head; on export it is rewritten as the tied copy CosyVoice expects.
        logger.warning(
            "`%s` differs from the text embedding; it is not used by the speech LM and will be exported as a copy "
            "of the text embedding (the layout CosyVoice2's tied Qwen2 backbone expects).",
            _TIED_TEXT_HEAD_KEY,
        )
    converted: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, tensor in state_dict.items():
        hf_key = cosyvoice_key_to_hf(key)
        if hf_key is not None:
            converted[hf_key] = tensor
    return converted


def export_cosyvoice_state_dict(
    model: CosyVoice2LM, dtype: torch.dtype | None = None
) -> OrderedDict[str, torch.Tensor]:
    """:class:`CosyVoice2LM` -> CosyVoice ``llm.pt`` state dict with exactly the released keys, in released order.

    The text head ``llm.model.lm_head.weight`` shares its tensor with the text embedding, which is how CosyVoice's
    own ``torch.save(model.state_dict())`` of a tied Qwen2 writes it.
    """
    hf_state = model.state_dict()
    adapter_keys = [key for key in hf_state if "lora_" in key or ".base_layer." in key or "modules_to_save" in key]
    if adapter_keys:
        raise CosyVoiceCheckpointError(
            f"The model still holds PEFT adapter weights (e.g. {adapter_keys[:3]}). CosyVoice cannot load them: "
            "merge the adapter first with `model = peft_model.merge_and_unload()` and export that model."
        )
    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in hf_state.items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[hf_key_to_cosyvoice(key)] = tensor.contiguous()
    tensors[_TIED_TEXT_HEAD_KEY] = tensors[_TEXT_EMBEDDING_KEY]
    expected = expected_cosyvoice_shapes(model.config)
    _check_layout(tensors, model.config, "The exported state dict")
    return OrderedDict((key, tensors[key]) for key in expected)


def detect_cosyvoice_version(state_dict: Mapping[str, torch.Tensor], source: str = "The checkpoint") -> int:
    """2 for a CosyVoice2 ``Qwen2LM`` state dict (``llm_embedding`` and a biased ``llm_decoder``), 3 for CosyVoice3's
    ``CosyVoice3LM`` (neither; its 200 special speech rows are then checked against the config's shapes)."""
    has_llm_embedding = "llm_embedding.weight" in state_dict
    has_bias = "llm_decoder.bias" in state_dict
    if "speech_embedding.weight" not in state_dict or "llm_decoder.weight" not in state_dict:
        raise CosyVoiceCheckpointError(
            f"{source} has no `speech_embedding.weight` / `llm_decoder.weight`; it is not a CosyVoice2 or CosyVoice3 "
            "llm.pt."
        )
    # A file with only one of the two is a damaged CosyVoice2 one: the strict layout check then lists what is off.
    return 2 if has_llm_embedding or has_bias else 3


def _model_class_for(version: int, model_class, llm_pt) -> type[CosyVoice2LM]:
    from ..cosyvoice3.modeling_cosyvoice3 import CosyVoice3LM  # the CosyVoice3 package builds on this one

    by_version = {2: CosyVoice2LM, 3: CosyVoice3LM}
    if model_class is None:
        return by_version[version]
    wanted = model_class.config_class.cosyvoice_version
    if wanted != version:
        layout = "llm_embedding and a biased head" if version == 2 else "no llm_embedding, a bias-free head"
        raise CosyVoiceCheckpointError(
            f"{llm_pt} is a CosyVoice{version} LM ({layout}), but {model_class.__name__} loads "
            f"CosyVoice{wanted}: use {by_version[version].__name__}.from_cosyvoice, or load_cosyvoice_checkpoint "
            "without model_class."
        )
    return model_class


def load_cosyvoice_llm_config(blank_en_dir_or_config_json: str | os.PathLike) -> Qwen2Config:
    """The Qwen2 backbone config of a CosyVoice2 release (``CosyVoice-BlankEN/config.json``)."""
    path = Path(blank_en_dir_or_config_json)
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        raise FileNotFoundError(
            f"No Qwen2 config at {config_file}. A CosyVoice2 model dir contains "
            f"`{COSYVOICE_BLANK_EN_DIRNAME}/config.json`; otherwise pass `llm_config=` explicitly."
        )
    return Qwen2Config.from_json_file(str(config_file))


def _resolve_paths(model_dir_or_llm_pt: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(model_dir_or_llm_pt)
    llm_pt = path / COSYVOICE_LLM_FILENAME if path.is_dir() else path
    if not llm_pt.is_file():
        raise FileNotFoundError(
            f"No CosyVoice2 LM checkpoint at {llm_pt}. Pass the CosyVoice2 model dir (with `{COSYVOICE_LLM_FILENAME}` "
            f"and `{COSYVOICE_BLANK_EN_DIRNAME}/`) or the path of an `{COSYVOICE_LLM_FILENAME}` file."
        )
    return llm_pt, llm_pt.parent / COSYVOICE_BLANK_EN_DIRNAME


def load_cosyvoice_checkpoint(
    model_dir_or_llm_pt: str | os.PathLike,
    llm_config: Qwen2Config | Mapping | str | os.PathLike | None = None,
    *,
    speech_token_size: int | None = None,
    num_special_speech_tokens: int | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    model_class: type[CosyVoice2LM] | None = None,
    **config_kwargs,
) -> CosyVoice2LM:
    """
    Load CosyVoice2's or CosyVoice3's ``llm.pt`` into a :class:`CosyVoice2LM` / :class:`CosyVoice3LM`, recognised
    from its keys (:func:`detect_cosyvoice_version`). ``model_class`` asks for one of them (an error names both when
    the file is the other); None takes the one the file holds.

    Args:
        model_dir_or_llm_pt: the CosyVoice2 model dir (``llm.pt`` + ``CosyVoice-BlankEN/``) or an ``llm.pt`` file
            (its sibling ``CosyVoice-BlankEN/`` is used when ``llm_config`` is not given).
        llm_config: the Qwen2 backbone config (a ``Qwen2Config``, a dict, or a ``CosyVoice-BlankEN`` dir /
            ``config.json``); read from ``CosyVoice-BlankEN/config.json`` by default.
        speech_token_size: codebook size; inferred from ``speech_embedding.weight`` (rows - special ids) when None.
        num_special_speech_tokens: extra speech ids after the codebook; defaults to 3 (CosyVoice2) / 200 (CosyVoice3).
        dtype: parameter dtype of the returned model; defaults to the checkpoint's dtype.
        attn_implementation: ``"sdpa"`` (default), ``"eager"``, ``"flash_attention_2"``, ...
        config_kwargs: further :class:`CosyVoice2LMConfig` fields (``sos_id``, ``task_id``).
    """
    llm_pt, blank_en_dir = _resolve_paths(model_dir_or_llm_pt)
    if llm_config is None:
        llm_config = load_cosyvoice_llm_config(blank_en_dir)
    elif isinstance(llm_config, (str, os.PathLike)):
        llm_config = load_cosyvoice_llm_config(llm_config)
    elif isinstance(llm_config, Mapping):
        llm_config = Qwen2Config(**llm_config)

    # weights_only: an llm.pt is a plain tensor dict; never unpickle arbitrary objects from a downloaded file.
    try:
        state_dict = torch.load(llm_pt, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError) as error:  # torch's errors for a truncated zip name neither the file nor a fix
        import zipfile

        if isinstance(error, (FileNotFoundError, PermissionError)) or zipfile.is_zipfile(llm_pt):
            raise
        raise CosyVoiceCheckpointError(
            f"{llm_pt} ({os.path.getsize(llm_pt)} bytes) is incomplete or corrupt ({error}): it was cut short, e.g. "
            "by an interrupted download or copy. Download or export it again."
        ) from error
    if not isinstance(state_dict, Mapping):
        raise CosyVoiceCheckpointError(f"{llm_pt} holds a {type(state_dict).__name__}, expected a state dict.")
    version = detect_cosyvoice_version(state_dict, str(llm_pt))
    model_class = _model_class_for(version, model_class, llm_pt)
    if num_special_speech_tokens is None:
        num_special_speech_tokens = model_class.config_class.num_special_speech_tokens
    if speech_token_size is None:
        speech_token_size = state_dict["speech_embedding.weight"].shape[0] - num_special_speech_tokens

    config = model_class.config_class(
        llm_config=llm_config,
        speech_token_size=speech_token_size,
        num_special_speech_tokens=num_special_speech_tokens,
        **config_kwargs,
    )
    config._attn_implementation = attn_implementation or "sdpa"
    converted = convert_cosyvoice_state_dict(state_dict, config)
    if dtype is None:
        dtype = next(t.dtype for t in converted.values() if t.is_floating_point())
    # Random init of a 0.5B model is wasted work: every parameter is overwritten just below.
    with no_init_weights():
        model = model_class(config)
    model.load_state_dict(converted, strict=True)
    model.to(dtype)
    model.config.dtype = dtype
    model.eval()
    return model


def _legacy_llm_config_dict(llm_config: Qwen2Config) -> dict:
    """BlankEN config.json readable by CosyVoice's (transformers 4.x) loader: flat ``rope_theta`` as in the release."""
    config_dict = llm_config.to_dict()
    rope = config_dict.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config_dict["rope_theta"] = rope["rope_theta"]
    config_dict.setdefault("architectures", ["Qwen2ForCausalLM"])
    return config_dict


def save_cosyvoice_checkpoint(
    model: CosyVoice2LM,
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = torch.float32,
    write_llm_config: bool = True,
) -> str:
    """
    Export ``model`` as a CosyVoice2 ``llm.pt`` (written atomically: temp file + ``os.replace``).

    Args:
        path: target file, or a directory (then ``<dir>/llm.pt``).
        dtype: dtype of the written floating-point tensors; defaults to ``torch.float32``, the dtype CosyVoice's
            ``Qwen2LM`` holds its weights in (it loads ``llm.pt`` into fp32 modules; fp16 is an autocast option at
            inference), so a bf16-trained model exports without losing upstream's precision expectations. Pass
            ``torch.bfloat16`` for a half-size file, or ``None`` to keep the model's dtype.
        write_llm_config: when ``path`` is a directory without ``CosyVoice-BlankEN/config.json``, write the backbone
            config there so that :meth:`CosyVoice2LM.from_cosyvoice` can read the directory back. An existing
            release config is never overwritten.

    Returns the path of the written ``llm.pt``.
    """
    path = Path(path)
    is_dir_target = path.is_dir() or path.suffix == ""
    llm_pt = path / COSYVOICE_LLM_FILENAME if is_dir_target else path
    state_dict = export_cosyvoice_state_dict(model, dtype=dtype)
    atomic_write(llm_pt, lambda tmp: torch.save(state_dict, tmp))
    if is_dir_target and write_llm_config:
        config_file = path / COSYVOICE_BLANK_EN_DIRNAME / "config.json"
        if not config_file.exists():
            text = json.dumps(_legacy_llm_config_dict(model.config.llm_config), indent=2, sort_keys=True, default=str)
            atomic_write(config_file, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    return str(llm_pt)


__all__ = [
    "detect_cosyvoice_version",
    "COSYVOICE_BLANK_EN_DIRNAME",
    "COSYVOICE_LLM_FILENAME",
    "CosyVoiceCheckpointError",
    "convert_cosyvoice_state_dict",
    "cosyvoice_key_to_hf",
    "expected_cosyvoice_shapes",
    "export_cosyvoice_state_dict",
    "hf_key_to_cosyvoice",
    "load_cosyvoice_checkpoint",
    "load_cosyvoice_llm_config",
    "save_cosyvoice_checkpoint",
]
