"""CosyVoice3 speech LM: transformers model, llm.pt import/export, text tokenizer. It extends the CosyVoice2 package
(same backbone, sequence layout, loss, generation and trainers); docs/cosyvoice3.md lists what differs."""

from transformers import AutoConfig, AutoModel

from ...data.prompts import COSYVOICE3_SYSTEM_PROMPT, build_plain_text
from .configuration_cosyvoice3 import (
    COSYVOICE3_0_5B_BACKBONE,
    COSYVOICE3_END_OF_PROMPT_ID,
    COSYVOICE3_NUM_SPECIAL_SPEECH_TOKENS,
    CosyVoice3LMConfig,
    tiny_cosyvoice3_config,
)
from .modeling_cosyvoice3 import CosyVoice3LM, CosyVoice3PreTrainedModel
from .tokenization import (
    COSYVOICE3_END_OF_SYSTEM,
    COSYVOICE3_END_OF_SYSTEM_ID,
    COSYVOICE3_SPECIAL_TOKENS,
    COSYVOICE3_TOKENIZER_LENGTH,
    build_tiny_cosyvoice3_tokenizer,
    load_cosyvoice3_tokenizer,
)


AutoConfig.register(CosyVoice3LMConfig.model_type, CosyVoice3LMConfig, exist_ok=True)
AutoModel.register(CosyVoice3LMConfig, CosyVoice3LM, exist_ok=True)

__all__ = [
    "COSYVOICE3_0_5B_BACKBONE",
    "COSYVOICE3_END_OF_PROMPT_ID",
    "COSYVOICE3_END_OF_SYSTEM",
    "COSYVOICE3_END_OF_SYSTEM_ID",
    "COSYVOICE3_NUM_SPECIAL_SPEECH_TOKENS",
    "COSYVOICE3_SPECIAL_TOKENS",
    "COSYVOICE3_SYSTEM_PROMPT",
    "COSYVOICE3_TOKENIZER_LENGTH",
    "CosyVoice3LM",
    "CosyVoice3LMConfig",
    "CosyVoice3PreTrainedModel",
    "build_plain_text",
    "build_tiny_cosyvoice3_tokenizer",
    "load_cosyvoice3_tokenizer",
    "tiny_cosyvoice3_config",
]
