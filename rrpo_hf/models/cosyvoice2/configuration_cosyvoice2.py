"""Configuration of the CosyVoice2 speech language model (``Qwen2LM`` in FunAudioLLM/CosyVoice).

The LM is a Qwen2 decoder stack that reads ``[sos, text tokens, task_id, speech tokens]`` and predicts
speech tokens with its own head. The Qwen2 backbone keeps its own :class:`~transformers.Qwen2Config`
(nested as ``llm_config``) so that it can be read from / written to the ``CosyVoice-BlankEN/config.json``
of a CosyVoice2 release unchanged.
"""

from __future__ import annotations

from transformers import PretrainedConfig, Qwen2Config
from transformers.configuration_utils import SubConfigSpec


#: The Qwen2 backbone of the released ``FunAudioLLM/CosyVoice2-0.5B`` (``CosyVoice-BlankEN/config.json``).
COSYVOICE2_0_5B_BACKBONE: dict = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "max_window_layers": 21,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
}

#: Rows of ``llm_embedding``: one learned vector for ``sos`` and one for ``task_id``.
NUM_LLM_EMBEDDING_ROWS = 2


class CosyVoice2LMConfig(PretrainedConfig):
    r"""
    Configuration of [`CosyVoice2LM`].

    Defaults reproduce the released CosyVoice2-0.5B LM; tests and the testbed use tiny backbones and small
    speech codebooks (e.g. ``speech_token_size=512``).

    Args:
        llm_config (`Qwen2Config` or `dict`, *optional*):
            The Qwen2 backbone (text embedding, decoder layers, final norm). Defaults to the CosyVoice2-0.5B
            backbone (hidden 896, 24 layers, 14 heads / 2 KV heads, vocab 151936).
        speech_token_size (`int`, *optional*, defaults to 6561):
            Size of the speech-token codebook (S3 tokenizer v2: 3^8 = 6561). Real speech ids are
            ``0 .. speech_token_size - 1``.
        num_special_speech_tokens (`int`, *optional*, defaults to 3):
            Extra speech ids after the codebook: ``speech_token_size + 0`` = eos, ``+1`` = unused stop token,
            ``+2`` = fill token (bistream). All of them stop generation.
        sos_id (`int`, *optional*, defaults to 0):
            Row of ``llm_embedding`` that starts every sequence.
        task_id (`int`, *optional*, defaults to 1):
            Row of ``llm_embedding`` that separates text from speech.
        bistream_text_chunk (`int`, *optional*, defaults to 5), bistream_speech_chunk (`int`, defaults to 15):
            Chunk sizes of CosyVoice2's bistream (streaming-text) layout, upstream's ``mix_ratio = [5, 15]``:
            ``[sos, 5 text, 15 speech, 5 text, 15 speech, ..., remaining text, task_id, remaining speech]``, where the
            last speech token of every full chunk predicts the fill id ``speech_token_size + 2``.
    """

    model_type = "cosyvoice2_lm"
    sub_configs_defaults = {
        "llm_config": SubConfigSpec(config_class=Qwen2Config, init_kwargs=dict(COSYVOICE2_0_5B_BACKBONE)),
    }

    llm_config: dict | Qwen2Config | None = None
    speech_token_size: int = 6561
    num_special_speech_tokens: int = 3
    sos_id: int = 0
    task_id: int = 1
    bistream_text_chunk: int = 5
    bistream_speech_chunk: int = 15

    #: The CosyVoice generation of this LM: data collators read it to pick the eos / fill ids and the prompt format.
    cosyvoice_version = 2
    #: The S3 speech tokenizer whose tokens the LM reads and writes (``speech_tokenizer_v2.onnx``).
    speech_tokenizer_version = "v2"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.speech_token_size < 1:
            raise ValueError(f"`speech_token_size` must be positive, got {self.speech_token_size}.")
        if self.num_special_speech_tokens < 1:
            raise ValueError(
                f"`num_special_speech_tokens` must be at least 1 (the eos id), got {self.num_special_speech_tokens}."
            )
        self._check_special_ids()
        if self.bistream_text_chunk < 1 or self.bistream_speech_chunk < 1:
            raise ValueError(
                "`bistream_text_chunk` and `bistream_speech_chunk` must be positive, got "
                f"{self.bistream_text_chunk} and {self.bistream_speech_chunk}."
            )

    def _check_special_ids(self) -> None:
        for name in ("sos_id", "task_id"):
            value = getattr(self, name)
            if not 0 <= value < NUM_LLM_EMBEDDING_ROWS:
                raise ValueError(f"`{name}` indexes the {NUM_LLM_EMBEDDING_ROWS}-row `llm_embedding`; got {value}.")
        if self.sos_id == self.task_id:
            raise ValueError(f"`sos_id` and `task_id` must differ, both are {self.sos_id}.")

    def get_text_config(self, decoder=None, encoder=None) -> Qwen2Config:
        """The Qwen2 backbone is the text model: transformers' utilities (e.g. `Trainer`'s special-token alignment)
        then read and write the text ids there, not on this speech-LM config."""
        return self.llm_config

    @property
    def hidden_size(self) -> int:
        return self.llm_config.hidden_size

    @property
    def num_hidden_layers(self) -> int:
        return self.llm_config.num_hidden_layers

    @property
    def num_attention_heads(self) -> int:
        return self.llm_config.num_attention_heads

    @property
    def text_vocab_size(self) -> int:
        return self.llm_config.vocab_size

    @property
    def speech_vocab_size(self) -> int:
        """Rows of ``speech_embedding`` / outputs of ``llm_decoder``: codebook + eos + extra stop ids."""
        return self.speech_token_size + self.num_special_speech_tokens

    @property
    def speech_eos_id(self) -> int:
        return self.speech_token_size

    @property
    def speech_fill_id(self) -> int | None:
        """The bistream fill id (``speech_token_size + 2``), or None when the head has fewer than 3 special ids."""
        return self.speech_token_size + 2 if self.num_special_speech_tokens >= 3 else None

    @property
    def stop_token_ids(self) -> list[int]:
        """Every id at or above the codebook ends an utterance (CosyVoice2 stops on 6561, 6562 and 6563)."""
        return list(range(self.speech_token_size, self.speech_vocab_size))


def tiny_cosyvoice2_config(
    tokenizer,
    speech_token_size: int,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 1024,
) -> CosyVoice2LMConfig:
    """A small from-scratch CosyVoice2 LM config sized to `tokenizer` (the testbed's toy policy).

    The backbone's bos/eos/pad ids are the tokenizer's ``<|endoftext|>``, as in the release (where both are 151643):
    otherwise `transformers.Trainer` "aligns" the released ids, which lie outside a tiny vocabulary, and warns.
    """
    end_of_text = tokenizer.eos_token_id
    return CosyVoice2LMConfig(
        llm_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=intermediate_size or 2 * hidden_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            max_position_embeddings=max_position_embeddings,
            tie_word_embeddings=False,
            bos_token_id=end_of_text,
            eos_token_id=end_of_text,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_of_text,
        ),
        speech_token_size=speech_token_size,
    )


__all__ = ["CosyVoice2LMConfig", "COSYVOICE2_0_5B_BACKBONE", "tiny_cosyvoice2_config"]
