"""CosyVoice2's speech language model (``Qwen2LM``) as a transformers ``PreTrainedModel``.

Module layout matches the released ``llm.pt`` one-to-one (see :mod:`.checkpoint` for the key mapping):

* ``llm_embedding``    Embedding(2, D): row ``sos_id`` starts a sequence, row ``task_id`` separates text and speech;
* ``model``            transformers :class:`~transformers.Qwen2Model` (text embedding + decoder stack + final norm);
* ``speech_embedding`` Embedding(speech_vocab_size, D);
* ``llm_decoder``      Linear(D, speech_vocab_size) **with bias** -- the only output head; the 151936-way text head
  of the backbone is never computed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, Qwen2Model
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_cosyvoice2 import NUM_LLM_EMBEDDING_ROWS, CosyVoice2LMConfig

IGNORE_INDEX = -100


@dataclass
class CosyVoice2LMOutput(ModelOutput):
    """
    Output of [`CosyVoice2LM.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            CosyVoice2's LM loss: cross-entropy over the speech positions, mean over non-ignored targets.
        logits (`torch.FloatTensor` of shape `(batch_size, speech_length + 1, speech_vocab_size)`):
            `logits[b, t]` is the distribution of speech token `t` of sample `b` given the text and speech tokens
            `< t`; `logits[b, S_b]` predicts the end of speech (eos) for a sample with `S_b` speech tokens.
        logits_mask (`torch.BoolTensor` of shape `(batch_size, speech_length + 1)`):
            True where `logits` belongs to a real position (`t <= S_b`), False on padding.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    logits_mask: torch.BoolTensor | None = None


class CosyVoice2PreTrainedModel(PreTrainedModel):
    config_class = CosyVoice2LMConfig
    config: CosyVoice2LMConfig
    base_model_prefix = "model"
    main_input_name = "text_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Qwen2DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # forward averages its own loss; without this the Trainer would rescale it by the process count.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        # The generic init reads `config.initializer_range`, which lives on the nested backbone config here.
        std = self.config.llm_config.initializer_range
        if isinstance(module, CosyVoice2LM):
            init.normal_(module.llm_embedding.weight, mean=0.0, std=std)
            init.normal_(module.speech_embedding.weight, mean=0.0, std=std)
            init.normal_(module.llm_decoder.weight, mean=0.0, std=std)
            init.zeros_(module.llm_decoder.bias)
        elif isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
        else:
            super()._init_weights(module)


class CosyVoice2LM(CosyVoice2PreTrainedModel):
    """CosyVoice2 LM: Qwen2 backbone over ``[sos, text, task_id, speech]`` with a speech-token head."""

    def __init__(self, config: CosyVoice2LMConfig):
        super().__init__(config)
        hidden_size = config.llm_config.hidden_size
        self.llm_embedding = nn.Embedding(NUM_LLM_EMBEDDING_ROWS, hidden_size)
        self.model = Qwen2Model(config.llm_config)
        self.speech_embedding = nn.Embedding(config.speech_vocab_size, hidden_size)
        self.llm_decoder = nn.Linear(hidden_size, config.speech_vocab_size, bias=True)
        self.post_init()

    # -- embeddings ---------------------------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        # The speech head is not tied to any input embedding; returning None keeps transformers from tying it.
        return None

    def _special_embedding(self, which: int, batch_size: int) -> torch.Tensor:
        row = self.llm_embedding.weight[which]
        return row.view(1, -1).expand(batch_size, -1)

    def embed_text(self, text_ids: torch.LongTensor, text_attention_mask: torch.Tensor) -> torch.Tensor:
        """Text-token embeddings; padded positions use id 0 so that any pad value is accepted."""
        vocab_size = self.config.llm_config.vocab_size
        valid = text_attention_mask.bool()
        real_ids = text_ids[valid]
        if real_ids.numel() and (int(real_ids.min()) < 0 or int(real_ids.max()) >= vocab_size):
            raise ValueError(
                f"text_ids must lie in [0, {vocab_size}) (the backbone's text vocabulary); got values in "
                f"[{int(real_ids.min())}, {int(real_ids.max())}]. Check that the tokenizer matches the model."
            )
        return self.model.embed_tokens(text_ids.masked_fill(~valid, 0))

    def embed_speech(
        self,
        speech_ids: torch.LongTensor | None = None,
        speech_attention_mask: torch.Tensor | None = None,
        speech_token_probs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Speech-token embeddings from hard ids, or ``probs @ speech_embedding.weight[:V]`` for soft tokens."""
        if (speech_ids is None) == (speech_token_probs is None):
            raise ValueError("Pass exactly one of `speech_ids` and `speech_token_probs`.")
        if speech_token_probs is not None:
            num_classes = speech_token_probs.shape[-1]
            if speech_token_probs.dim() != 3 or num_classes > self.config.speech_vocab_size:
                raise ValueError(
                    "speech_token_probs must have shape (batch, speech_length, V) with V <= speech_vocab_size "
                    f"({self.config.speech_vocab_size}); got {tuple(speech_token_probs.shape)}."
                )
            weight = self.speech_embedding.weight[:num_classes]
            return speech_token_probs.to(weight.dtype) @ weight
        valid = (
            torch.ones_like(speech_ids, dtype=torch.bool)
            if speech_attention_mask is None
            else speech_attention_mask.bool()
        )
        real_ids = speech_ids[valid]
        if real_ids.numel() and (int(real_ids.min()) < 0 or int(real_ids.max()) >= self.config.speech_vocab_size):
            raise ValueError(
                f"speech_ids must lie in [0, {self.config.speech_vocab_size}) (codebook {self.config.speech_token_size} "
                f"+ {self.config.num_special_speech_tokens} special ids); got values in "
                f"[{int(real_ids.min())}, {int(real_ids.max())}]. Mask padding with speech_attention_mask."
            )
        return self.speech_embedding(speech_ids.masked_fill(~valid, 0))

    def embed_prompt(
        self, text_ids: torch.LongTensor, text_attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.LongTensor]:
        """
        Embeddings of ``[sos, text, task_id]`` per sample, LEFT-padded (every prompt ends at the last column, so
        generation appends speech tokens to all samples at once).

        Returns ``(inputs_embeds (B, L, D), attention_mask (B, L) long)`` with ``L = max text length + 2``.
        """
        text_attention_mask = self._text_mask(text_ids, text_attention_mask)
        text_lengths = text_attention_mask.sum(dim=1)
        batch_size = text_ids.shape[0]
        prompt_length = int(text_lengths.max()) + 2
        text_embeds = self.embed_text(text_ids, text_attention_mask)

        starts = prompt_length - (text_lengths + 2)  # first real column of each left-padded row
        embeds = text_embeds.new_zeros(batch_size, prompt_length, text_embeds.shape[-1])
        batch_index = torch.arange(batch_size, device=text_ids.device)
        embeds = embeds.index_put(
            (batch_index, starts), self._special_embedding(self.config.sos_id, batch_size).to(embeds.dtype)
        )
        rows, cols = text_attention_mask.bool().nonzero(as_tuple=True)
        rank_in_text = text_attention_mask.cumsum(dim=1)[rows, cols] - 1
        embeds = embeds.index_put((rows, starts[rows] + 1 + rank_in_text), text_embeds[rows, cols])
        embeds = embeds.index_put(
            (batch_index, torch.full_like(starts, prompt_length - 1)),
            self._special_embedding(self.config.task_id, batch_size).to(embeds.dtype),
        )
        columns = torch.arange(prompt_length, device=text_ids.device).unsqueeze(0)
        attention_mask = (columns >= starts.unsqueeze(1)).long()
        return embeds, attention_mask

    def speech_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The speech head (``llm_decoder``): hidden states -> ``speech_vocab_size`` logits."""
        return self.llm_decoder(hidden_states)

    # -- forward ------------------------------------------------------------------------------------------------
    @staticmethod
    def _text_mask(text_ids: torch.LongTensor, text_attention_mask: torch.Tensor | None) -> torch.Tensor:
        if text_ids.dim() != 2:
            raise ValueError(f"text_ids must have shape (batch, text_length), got {tuple(text_ids.shape)}.")
        if text_attention_mask is None:
            text_attention_mask = torch.ones_like(text_ids)
        if text_attention_mask.shape != text_ids.shape:
            raise ValueError(
                f"text_attention_mask {tuple(text_attention_mask.shape)} must match text_ids {tuple(text_ids.shape)}."
            )
        text_attention_mask = text_attention_mask.long()
        empty = (text_attention_mask.sum(dim=1) == 0).nonzero(as_tuple=True)[0]
        if empty.numel():
            raise ValueError(
                f"Samples {empty.tolist()} have no text tokens. CosyVoice2 conditions speech on text: drop empty "
                "texts from the batch."
            )
        return text_attention_mask

    def forward(
        self,
        text_ids: torch.LongTensor,
        text_attention_mask: torch.Tensor | None = None,
        speech_ids: torch.LongTensor | None = None,
        speech_attention_mask: torch.Tensor | None = None,
        speech_token_probs: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> CosyVoice2LMOutput:
        r"""
        Teacher-forced pass over ``[sos, text, task_id, speech]`` per sample.

        Args:
            text_ids (`torch.LongTensor` of shape `(batch_size, text_length)`):
                Text token ids (any padding side; padding is given by `text_attention_mask`).
            text_attention_mask (`torch.Tensor` of shape `(batch_size, text_length)`, *optional*):
                1 for real text tokens. Every sample needs at least one.
            speech_ids (`torch.LongTensor` of shape `(batch_size, speech_length)`, *optional*):
                Speech tokens, right-padded. Without speech (and without `speech_token_probs`) only the first speech
                token is predicted.
            speech_attention_mask (`torch.Tensor` of shape `(batch_size, speech_length)`, *optional*):
                1 for real speech tokens, right-padded.
            speech_token_probs (`torch.Tensor` of shape `(batch_size, speech_length, V)`, *optional*):
                Soft speech tokens (`V <= speech_vocab_size`), embedded as `probs @ speech_embedding.weight[:V]`.
            labels (`torch.LongTensor` of shape `(batch_size, speech_length + 1)`, *optional*):
                Targets for `logits` (speech tokens then eos); `-100` is ignored.
        """
        if speech_ids is not None and speech_token_probs is not None:
            raise ValueError("Pass `speech_ids` or `speech_token_probs`, not both.")
        text_attention_mask = self._text_mask(text_ids, text_attention_mask)
        batch_size = text_ids.shape[0]
        device = text_ids.device

        if speech_ids is not None or speech_token_probs is not None:
            speech_width = (speech_ids if speech_ids is not None else speech_token_probs).shape[1]
            if speech_attention_mask is None:
                speech_attention_mask = torch.ones(batch_size, speech_width, dtype=torch.long, device=device)
            expected = (batch_size, speech_width)
            if tuple(speech_attention_mask.shape) != expected:
                raise ValueError(f"speech_attention_mask {tuple(speech_attention_mask.shape)} must be {expected}.")
            speech_attention_mask = speech_attention_mask.long()
            speech_embeds = self.embed_speech(speech_ids, speech_attention_mask, speech_token_probs)
        else:
            speech_width = 0
            speech_attention_mask = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
            speech_embeds = None

        text_lengths = text_attention_mask.sum(dim=1)
        speech_lengths = speech_attention_mask.sum(dim=1)
        sequence_lengths = text_lengths + speech_lengths + 2
        total_length = int(sequence_lengths.max())
        text_embeds = self.embed_text(text_ids, text_attention_mask)
        batch_index = torch.arange(batch_size, device=device)

        # Pack left-aligned: [sos, text_0..text_{T_b-1}, task_id, speech_0..speech_{S_b-1}, padding...].
        # Left alignment gives every sample the positions 0..len-1, so the backbone's default position ids are right.
        inputs_embeds = text_embeds.new_zeros(batch_size, total_length, text_embeds.shape[-1])
        inputs_embeds = inputs_embeds.index_put(
            (batch_index, torch.zeros_like(text_lengths)),
            self._special_embedding(self.config.sos_id, batch_size).to(inputs_embeds.dtype),
        )
        rows, cols = text_attention_mask.bool().nonzero(as_tuple=True)
        text_rank = text_attention_mask.cumsum(dim=1)[rows, cols] - 1
        inputs_embeds = inputs_embeds.index_put((rows, 1 + text_rank), text_embeds[rows, cols])
        task_positions = text_lengths + 1
        inputs_embeds = inputs_embeds.index_put(
            (batch_index, task_positions),
            self._special_embedding(self.config.task_id, batch_size).to(inputs_embeds.dtype),
        )
        if speech_embeds is not None:
            rows, cols = speech_attention_mask.bool().nonzero(as_tuple=True)
            speech_rank = speech_attention_mask.cumsum(dim=1)[rows, cols] - 1
            inputs_embeds = inputs_embeds.index_put(
                (rows, task_positions[rows] + 1 + speech_rank), speech_embeds[rows, cols].to(inputs_embeds.dtype)
            )
        columns = torch.arange(total_length, device=device).unsqueeze(0)
        attention_mask = (columns < sequence_lengths.unsqueeze(1)).long()

        kwargs.pop("use_cache", None)
        kwargs.pop("return_dict", None)
        hidden_states = self.model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, **kwargs
        ).last_hidden_state

        # The hidden state at task_id predicts speech token 0; the one at speech token t predicts token t + 1.
        offsets = torch.arange(speech_width + 1, device=device).unsqueeze(0)
        logits_mask = offsets <= speech_lengths.unsqueeze(1)
        gather_positions = (task_positions.unsqueeze(1) + offsets).clamp(max=total_length - 1)
        speech_hidden = hidden_states[batch_index.unsqueeze(1), gather_positions]
        logits = self.llm_decoder(speech_hidden)

        loss = None
        if labels is not None:
            loss = self.loss_function_cosyvoice2(logits, labels, logits_mask)
        return CosyVoice2LMOutput(loss=loss, logits=logits, logits_mask=logits_mask)

    @staticmethod
    def loss_function_cosyvoice2(
        logits: torch.Tensor, labels: torch.LongTensor, logits_mask: torch.Tensor
    ) -> torch.Tensor:
        """CosyVoice2's LM loss: cross-entropy (no label smoothing) averaged over the non-ignored targets."""
        if labels.shape != logits.shape[:2]:
            raise ValueError(
                f"labels must have shape (batch, speech_length + 1) = {tuple(logits.shape[:2])} (speech tokens then "
                f"eos, -100 ignored); got {tuple(labels.shape)}."
            )
        targets = labels.to(logits.device)
        if bool(((targets != IGNORE_INDEX) & ~logits_mask).any()):
            raise ValueError(
                "labels set a target on a padded speech position. Set labels to -100 after each sample's eos."
            )
        num_targets = (targets != IGNORE_INDEX).sum()
        if int(num_targets) == 0:
            raise ValueError("labels contain no target (all -100); the loss would be undefined.")
        summed = F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        return summed / num_targets

    # -- CosyVoice2 llm.pt interoperability ---------------------------------------------------------------------
    @classmethod
    def from_cosyvoice(cls, model_dir_or_llm_pt: str | os.PathLike, llm_config=None, **kwargs) -> "CosyVoice2LM":
        """Build the model from a CosyVoice2 release dir (``llm.pt`` + ``CosyVoice-BlankEN``) or an ``llm.pt`` file.

        See :func:`rrpo_hf.models.cosyvoice2.checkpoint.load_cosyvoice_checkpoint` for the keyword arguments.
        """
        from .checkpoint import load_cosyvoice_checkpoint

        return load_cosyvoice_checkpoint(model_dir_or_llm_pt, llm_config=llm_config, model_class=cls, **kwargs)

    def save_cosyvoice(self, path: str | os.PathLike, **kwargs) -> str:
        """Write an ``llm.pt`` that CosyVoice2's ``Qwen2LM`` loads with ``strict=True``; returns the file path.

        See :func:`rrpo_hf.models.cosyvoice2.checkpoint.save_cosyvoice_checkpoint`.
        """
        from .checkpoint import save_cosyvoice_checkpoint

        return save_cosyvoice_checkpoint(self, path, **kwargs)


__all__ = ["CosyVoice2LM", "CosyVoice2LMOutput", "CosyVoice2PreTrainedModel", "IGNORE_INDEX"]
