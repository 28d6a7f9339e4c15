"""CosyVoice3's speech language model (``CosyVoice3LM``) as a transformers ``PreTrainedModel``.

Module layout matches the released ``llm.pt`` one-to-one (``rrpo_hf.models.cosyvoice2.checkpoint`` maps the keys):

* ``model``            transformers :class:`~transformers.Qwen2Model` (text embedding + decoder stack + final norm);
* ``speech_embedding`` Embedding(speech_token_size + 200, D): the codebook, then sos, eos, task_id, fill, unused ids;
* ``llm_decoder``      Linear(D, speech_token_size + 200) **without bias**.

Everything else (sequence layout, bistream, zero-shot prompts, loss, soft-token inputs for DiffRO, generation) is
CosyVoice2's and inherited from :class:`CosyVoice2LM`; only where ``sos`` / ``task_id`` come from, where a bistream
row's chunks start and the ``<|endofprompt|>`` check differ.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Qwen2Model

from ..cosyvoice2.modeling_cosyvoice2 import CosyVoice2LM, CosyVoice2PreTrainedModel
from .configuration_cosyvoice3 import CosyVoice3LMConfig


class CosyVoice3PreTrainedModel(CosyVoice2PreTrainedModel):
    """Base of the CosyVoice3 LM (consistent saves as :class:`CosyVoice2PreTrainedModel`)."""

    config_class = CosyVoice3LMConfig
    config: CosyVoice3LMConfig


class CosyVoice3LM(CosyVoice2LM):
    """CosyVoice3 LM: Qwen2 backbone over ``[sos, text, task_id, speech]``; sos and task_id are speech ids."""

    config_class = CosyVoice3LMConfig
    config: CosyVoice3LMConfig

    def __init__(self, config: CosyVoice3LMConfig):
        # CosyVoice2LM.__init__ would build the llm_embedding and a biased head, neither of which CosyVoice3 has.
        CosyVoice2PreTrainedModel.__init__(self, config)
        hidden_size = config.llm_config.hidden_size
        self.model = Qwen2Model(config.llm_config)
        self.llm_decoder = nn.Linear(hidden_size, config.speech_vocab_size, bias=False)
        self.speech_embedding = nn.Embedding(config.speech_vocab_size, hidden_size)
        self.post_init()

    def _special_embedding(self, which: int, batch_size: int) -> torch.Tensor:
        row = self.speech_embedding.weight[which]
        return row.view(1, -1).expand(batch_size, -1)

    def _end_of_prompt_ranks(self, text_ids: torch.LongTensor, text_attention_mask: torch.Tensor) -> torch.Tensor:
        """Per sample, 1 + the rank (among real text tokens) of its last ``<|endofprompt|>``; 0 without one."""
        mask = text_attention_mask.long()
        rank = mask.cumsum(dim=1)
        is_end = (text_ids == self.config.end_of_prompt_id) & mask.bool()
        return torch.where(is_end, rank, 0).max(dim=1).values

    def bistream_prefix_lengths(self, text_ids: torch.LongTensor, text_attention_mask: torch.Tensor) -> torch.Tensor:
        """The system prompt and instruction (up to the last ``<|endofprompt|>``) precede the chunks, as upstream's
        ``instruct_token`` does in ``prepare_lm_input_target``."""
        return self._end_of_prompt_ranks(text_ids, text_attention_mask)

    def embed_prompt(
        self, text_ids, text_attention_mask=None, prompt_speech_ids=None, prompt_speech_attention_mask=None
    ):
        """As :meth:`CosyVoice2LM.embed_prompt`; every text must hold ``<|endofprompt|>`` (upstream asserts it)."""
        mask = self._text_mask(text_ids, text_attention_mask)
        missing = (self._end_of_prompt_ranks(text_ids, mask) == 0).nonzero().flatten().tolist()
        if missing:
            raise ValueError(
                f"Samples {missing} lack <|endofprompt|> (id {self.config.end_of_prompt_id}), which CosyVoice3 needs "
                "in every text: build the texts with rrpo_hf.data.prompts (build_instruct_text / build_plain_text "
                "with cosyvoice_version=3: 'You are a helpful assistant.<|endofprompt|>' + text)."
            )
        return super().embed_prompt(text_ids, mask, prompt_speech_ids, prompt_speech_attention_mask)


__all__ = ["CosyVoice3LM", "CosyVoice3PreTrainedModel"]
