"""A reward model is tied to the speech tokenizer it was trained on: the check that a policy and a reward model
read tokens of the same S3 tokenizer (CosyVoice2: ``speech_tokenizer_v2.onnx``; CosyVoice3: ``_v3``).

Both tokenizers have 6561 codes, so a codebook-size check cannot tell them apart; a v2 reward model on a v3 policy
would train without error and reward the wrong sounds.
"""

from __future__ import annotations


#: What a config without the field reads (every CosyVoice2 policy and every reward model saved before it existed).
DEFAULT_SPEECH_TOKENIZER_VERSION = "v2"


def speech_tokenizer_version(config) -> str:
    """The S3 tokenizer version a policy or reward-model config reads (``"v2"`` when it does not say)."""
    return getattr(config, "speech_tokenizer_version", None) or DEFAULT_SPEECH_TOKENIZER_VERSION


def check_speech_tokenizer_match(policy_config, reward_config, reward_name: str = "reward_model") -> None:
    """Raise ``ValueError`` naming both versions when the reward model reads another S3 tokenizer than the policy."""
    policy_version = speech_tokenizer_version(policy_config)
    reward_version = speech_tokenizer_version(reward_config)
    if policy_version != reward_version:
        raise ValueError(
            f"Speech tokenizer mismatch: the policy ({type(policy_config).__name__}) reads S3 tokenizer "
            f"{policy_version} tokens (speech_tokenizer_{policy_version}.onnx) but the {reward_name} was trained on "
            f"{reward_version} tokens (its config's speech_tokenizer_version). Train the reward model on data "
            f"tokenized with speech_tokenizer_{policy_version}.onnx (examples/prepare_data.py --tokenizer_model), "
            f"with speech_tokenizer_version='{policy_version}'."
        )


__all__ = ["DEFAULT_SPEECH_TOKENIZER_VERSION", "check_speech_tokenizer_match", "speech_tokenizer_version"]
