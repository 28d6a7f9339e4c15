"""The robust speech-emotion reward model; importing this registers it with the Auto classes."""

from transformers import AutoConfig, AutoModelForAudioClassification

from .configuration_robust_ser import DEFAULT_EMOTIONS, RobustSERConfig
from .modeling_robust_ser import RobustSERForAudioClassification, RobustSEROutput, RobustSERPreTrainedModel
from .remote_code import bundle_remote_code_dependencies


AutoConfig.register(RobustSERConfig.model_type, RobustSERConfig, exist_ok=True)
AutoModelForAudioClassification.register(RobustSERConfig, RobustSERForAudioClassification, exist_ok=True)
# `save_pretrained` then writes the code (and an `auto_map`) into the folder, for `trust_remote_code=True` loading.
RobustSERConfig.register_for_auto_class()
RobustSERForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")

__all__ = [
    "DEFAULT_EMOTIONS",
    "RobustSERConfig",
    "RobustSERForAudioClassification",
    "RobustSEROutput",
    "RobustSERPreTrainedModel",
    "bundle_remote_code_dependencies",
]
