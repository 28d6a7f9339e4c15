"""The robust speech-emotion reward model and the multi-task token reward model, two heads on one encoder
(`RobustSERModel`); importing this registers both heads with the Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification

from .configuration_robust_multitask import DEFAULT_QUALITY_LABELS, MULTITASK_TASKS, RobustMultiTaskRMConfig
from .configuration_robust_ser import DEFAULT_EMOTIONS, RobustSERConfig
from .modeling_robust_multitask import RobustMultiTaskRMOutput, RobustSERForMultiTaskReward, encode_symbol_texts
from .modeling_robust_ser import (
    RobustSERForAudioClassification,
    RobustSERModel,
    RobustSERModelOutput,
    RobustSEROutput,
    RobustSERPreTrainedModel,
)
from .remote_code import bundle_remote_code_dependencies


AutoConfig.register(RobustSERConfig.model_type, RobustSERConfig, exist_ok=True)
AutoModelForAudioClassification.register(RobustSERConfig, RobustSERForAudioClassification, exist_ok=True)
# `save_pretrained` then writes the code (and an `auto_map`) into the folder, for `trust_remote_code=True` loading.
RobustSERConfig.register_for_auto_class()
RobustSERForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")

AutoConfig.register(RobustMultiTaskRMConfig.model_type, RobustMultiTaskRMConfig, exist_ok=True)
AutoModel.register(RobustMultiTaskRMConfig, RobustSERForMultiTaskReward, exist_ok=True)
RobustMultiTaskRMConfig.register_for_auto_class()
RobustSERForMultiTaskReward.register_for_auto_class("AutoModel")

__all__ = [
    "DEFAULT_EMOTIONS",
    "DEFAULT_QUALITY_LABELS",
    "MULTITASK_TASKS",
    "RobustMultiTaskRMConfig",
    "RobustMultiTaskRMOutput",
    "RobustSERConfig",
    "RobustSERForAudioClassification",
    "RobustSERForMultiTaskReward",
    "RobustSERModel",
    "RobustSERModelOutput",
    "RobustSEROutput",
    "RobustSERPreTrainedModel",
    "bundle_remote_code_dependencies",
    "encode_symbol_texts",
]
