"""CosyVoice2 speech LM: transformers model, llm.pt import/export, text tokenizer and instruct prompts."""

from transformers import AutoConfig, AutoModel

from ...data.prompts import (
    EMOTION_INSTRUCTION_TEMPLATES,
    EMOTION_NAMES_ZH,
    build_emotion_instruction,
    build_instruct_text,
    build_zero_shot_inputs,
    instruction_words,
)
from .checkpoint import CosyVoiceCheckpointError, load_cosyvoice_checkpoint, save_cosyvoice_checkpoint
from .configuration_cosyvoice2 import COSYVOICE2_0_5B_BACKBONE, CosyVoice2LMConfig, tiny_cosyvoice2_config
from .generation import count_target_text_tokens, generate_speech_tokens, ras_sampling, unwrap_for_generation
from .loading import (
    DEFAULT_LORA_TARGETS,
    is_cosyvoice_release,
    load_cosyvoice2_lm_and_tokenizer,
    lora_config_from_model_args,
)
from .modeling_cosyvoice2 import IGNORE_INDEX, CosyVoice2LM, CosyVoice2LMOutput, CosyVoice2PreTrainedModel
from .tokenization import (
    COSYVOICE2_END_OF_PROMPT,
    COSYVOICE2_EOS_TOKEN,
    COSYVOICE2_SPECIAL_TOKENS,
    build_tiny_cosyvoice2_tokenizer,
    load_cosyvoice2_tokenizer,
)


AutoConfig.register(CosyVoice2LMConfig.model_type, CosyVoice2LMConfig, exist_ok=True)
AutoModel.register(CosyVoice2LMConfig, CosyVoice2LM, exist_ok=True)

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "is_cosyvoice_release",
    "load_cosyvoice2_lm_and_tokenizer",
    "lora_config_from_model_args",
    "COSYVOICE2_0_5B_BACKBONE",
    "COSYVOICE2_END_OF_PROMPT",
    "COSYVOICE2_EOS_TOKEN",
    "COSYVOICE2_SPECIAL_TOKENS",
    "EMOTION_INSTRUCTION_TEMPLATES",
    "EMOTION_NAMES_ZH",
    "build_emotion_instruction",
    "build_instruct_text",
    "build_zero_shot_inputs",
    "build_tiny_cosyvoice2_tokenizer",
    "count_target_text_tokens",
    "generate_speech_tokens",
    "ras_sampling",
    "tiny_cosyvoice2_config",
    "unwrap_for_generation",
    "instruction_words",
    "load_cosyvoice2_tokenizer",
    "load_cosyvoice_checkpoint",
    "save_cosyvoice_checkpoint",
    "CosyVoice2LM",
    "CosyVoice2LMConfig",
    "CosyVoice2LMOutput",
    "CosyVoice2PreTrainedModel",
    "CosyVoiceCheckpointError",
    "IGNORE_INDEX",
]
