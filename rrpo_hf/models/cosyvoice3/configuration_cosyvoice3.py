"""Configuration of the CosyVoice3 speech language model (``CosyVoice3LM`` in FunAudioLLM/CosyVoice).

CosyVoice3's LM is CosyVoice2's (``Qwen2LM``) with three changes, all in its speech vocabulary: ``sos`` and
``task_id`` are rows of the speech embedding instead of a separate ``llm_embedding``, the speech embedding and the
bias-free head have 200 ids after the codebook (all of them stop generation), and eos / fill move to
``speech_token_size + 1`` / ``+ 3``. The backbone, the sequence layout and the loss are CosyVoice2's, so this
config extends :class:`CosyVoice2LMConfig` (see docs/cosyvoice3.md).
"""

from __future__ import annotations

from ..cosyvoice2.configuration_cosyvoice2 import COSYVOICE2_0_5B_BACKBONE, CosyVoice2LMConfig


#: The Qwen2 backbone of ``Fun-CosyVoice3-0.5B`` (``cosyvoice3.yaml``: llm_input_size 896): the same Qwen2.5-0.5B
#: layout as CosyVoice2's.
COSYVOICE3_0_5B_BACKBONE: dict = dict(COSYVOICE2_0_5B_BACKBONE)
#: Speech ids after the codebook (upstream: ``speech_token_size + 200`` rows and 200 stop ids).
COSYVOICE3_NUM_SPECIAL_SPEECH_TOKENS = 200
#: Id of ``<|endofprompt|>`` in the released tokenizer (upstream asserts it in every LM input).
COSYVOICE3_END_OF_PROMPT_ID = 151646


class CosyVoice3LMConfig(CosyVoice2LMConfig):
    r"""
    Configuration of [`CosyVoice3LM`].

    Defaults reproduce the released Fun-CosyVoice3-0.5B LM. The fields are those of [`CosyVoice2LMConfig`], with
    these meanings and defaults:

    Args:
        llm_config (`Qwen2Config` or `dict`, *optional*):
            The Qwen2 backbone; defaults to the 0.5B backbone (hidden 896, 24 layers, 14 / 2 heads, vocab 151936).
        speech_token_size (`int`, *optional*, defaults to 6561):
            Codebook of the S3 tokenizer v3 (``speech_tokenizer_v3.onnx``: 3^8 ids).
        num_special_speech_tokens (`int`, *optional*, defaults to 200):
            Speech ids after the codebook: ``+0`` = sos, ``+1`` = eos, ``+2`` = task_id, ``+3`` = fill (bistream),
            the rest unused. Every one of them stops generation, and every one is masked before ``min_len``.
        sos_id (`int`, *optional*):
            The speech-embedding row that starts every sequence; defaults to ``speech_token_size`` (upstream's).
        task_id (`int`, *optional*):
            The speech-embedding row between text and speech; defaults to ``speech_token_size + 2`` (upstream's).
        end_of_prompt_id (`int`, *optional*, defaults to 151646):
            The text-token id of ``<|endofprompt|>``. Every text must contain it (upstream asserts it at inference),
            and in bistream rows the text up to it (system prompt, instruction) precedes the chunks.
        bistream_text_chunk (`int`, *optional*, defaults to 5), bistream_speech_chunk (`int`, defaults to 15):
            Upstream's ``mix_ratio = [5, 15]``.
    """

    model_type = "cosyvoice3_lm"

    num_special_speech_tokens: int = COSYVOICE3_NUM_SPECIAL_SPEECH_TOKENS
    sos_id: int | None = None
    task_id: int | None = None
    end_of_prompt_id: int = COSYVOICE3_END_OF_PROMPT_ID

    cosyvoice_version = 3
    speech_tokenizer_version = "v3"

    def _check_special_ids(self) -> None:
        if self.num_special_speech_tokens < 4:
            raise ValueError(
                "CosyVoice3 needs at least 4 special speech ids (sos, eos, task_id, fill), got "
                f"num_special_speech_tokens={self.num_special_speech_tokens}."
            )
        if self.sos_id is None:
            self.sos_id = self.speech_token_size
        if self.task_id is None:
            self.task_id = self.speech_token_size + 2
        reserved = {self.speech_eos_id: "eos", self.speech_fill_id: "fill"}
        for name in ("sos_id", "task_id"):
            value = getattr(self, name)
            if not self.speech_token_size <= value < self.speech_vocab_size or value in reserved:
                raise ValueError(
                    f"`{name}`={value} must be a special speech id in [{self.speech_token_size}, "
                    f"{self.speech_vocab_size}) other than eos ({self.speech_eos_id}) and fill "
                    f"({self.speech_fill_id}); CosyVoice3 uses {self.speech_token_size} and "
                    f"{self.speech_token_size + 2}."
                )
        if self.sos_id == self.task_id:
            raise ValueError(f"`sos_id` and `task_id` must differ, both are {self.sos_id}.")

    @property
    def speech_eos_id(self) -> int:
        return self.speech_token_size + 1

    @property
    def speech_fill_id(self) -> int:
        return self.speech_token_size + 3


def tiny_cosyvoice3_config(tokenizer, speech_token_size: int, **backbone_kwargs) -> CosyVoice3LMConfig:
    """A small from-scratch CosyVoice3 LM config sized to `tokenizer` (a word-level CosyVoice3 tokenizer), as
    :func:`~rrpo_hf.models.cosyvoice2.tiny_cosyvoice2_config` builds for CosyVoice2."""
    from ..cosyvoice2.configuration_cosyvoice2 import tiny_cosyvoice2_config
    from ..cosyvoice2.tokenization import COSYVOICE2_END_OF_PROMPT

    base = tiny_cosyvoice2_config(tokenizer, speech_token_size, **backbone_kwargs)
    return CosyVoice3LMConfig(
        llm_config=base.llm_config,
        speech_token_size=speech_token_size,
        end_of_prompt_id=tokenizer.convert_tokens_to_ids(COSYVOICE2_END_OF_PROMPT),
    )


__all__ = [
    "COSYVOICE3_0_5B_BACKBONE",
    "COSYVOICE3_END_OF_PROMPT_ID",
    "COSYVOICE3_NUM_SPECIAL_SPEECH_TOKENS",
    "CosyVoice3LMConfig",
    "tiny_cosyvoice3_config",
]
