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

from ...ops.gumbel import soft_token_embedding
from ...utils.saving import ConsistentSaveMixin
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


class CosyVoice2PreTrainedModel(ConsistentSaveMixin, PreTrainedModel):
    """Base of the CosyVoice2 LM. `save_pretrained` replaces a saved model in one commit (a killed save leaves the
    old model or the new one) and `from_pretrained` names a truncated weights file; see `rrpo_hf.utils.saving`."""

    config_class = CosyVoice2LMConfig
    config: CosyVoice2LMConfig
    base_model_prefix = "model"
    main_input_name = "text_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Qwen2DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
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
            if getattr(module, "llm_embedding", None) is not None:  # CosyVoice3 keeps sos/task_id in speech_embedding
                init.normal_(module.llm_embedding.weight, mean=0.0, std=std)
            init.normal_(module.speech_embedding.weight, mean=0.0, std=std)
            init.normal_(module.llm_decoder.weight, mean=0.0, std=std)
            if module.llm_decoder.bias is not None:
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
        """The ``sos`` / ``task_id`` vector (``which`` = ``config.sos_id`` or ``config.task_id``) for every sample."""
        row = self.llm_embedding.weight[which]
        return row.view(1, -1).expand(batch_size, -1)

    def bistream_prefix_lengths(self, text_ids: torch.LongTensor, text_attention_mask: torch.Tensor) -> torch.Tensor:
        """Per sample, the text tokens read before the bistream chunks start: none in CosyVoice2, whose instruction
        is chunked with the text. CosyVoice3 overrides this (its instruction precedes the chunks)."""
        return torch.zeros(text_ids.shape[0], dtype=torch.long, device=text_ids.device)

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
            return soft_token_embedding(speech_token_probs, self.speech_embedding.weight)
        valid = (
            torch.ones_like(speech_ids, dtype=torch.bool)
            if speech_attention_mask is None
            else speech_attention_mask.bool()
        )
        real_ids = speech_ids[valid]
        if real_ids.numel() and (int(real_ids.min()) < 0 or int(real_ids.max()) >= self.config.speech_vocab_size):
            raise ValueError(
                f"speech_ids must lie in [0, {self.config.speech_vocab_size}) (codebook "
                f"{self.config.speech_token_size} "
                f"+ {self.config.num_special_speech_tokens} special ids); got values in "
                f"[{int(real_ids.min())}, {int(real_ids.max())}]. Mask padding with speech_attention_mask."
            )
        return self.speech_embedding(speech_ids.masked_fill(~valid, 0))

    def _prompt_speech(
        self, batch_size: int, prompt_speech_ids: torch.LongTensor | None, prompt_speech_attention_mask
    ) -> tuple[torch.Tensor | None, torch.LongTensor]:
        """Embeddings and mask of the optional zero-shot prompt speech (right-padded); an empty mask without it."""
        device = self.speech_embedding.weight.device
        if prompt_speech_ids is None:
            if prompt_speech_attention_mask is not None:
                raise ValueError("prompt_speech_attention_mask was given without prompt_speech_ids.")
            return None, torch.zeros(batch_size, 0, dtype=torch.long, device=device)
        if prompt_speech_ids.dim() != 2 or prompt_speech_ids.shape[0] != batch_size:
            raise ValueError(
                f"prompt_speech_ids must have shape (batch_size={batch_size}, prompt_length), got "
                f"{tuple(prompt_speech_ids.shape)}."
            )
        if prompt_speech_attention_mask is None:
            prompt_speech_attention_mask = torch.ones_like(prompt_speech_ids)
        if prompt_speech_attention_mask.shape != prompt_speech_ids.shape:
            raise ValueError(
                f"prompt_speech_attention_mask {tuple(prompt_speech_attention_mask.shape)} must match "
                f"prompt_speech_ids {tuple(prompt_speech_ids.shape)}."
            )
        mask = prompt_speech_attention_mask.long()
        real_ids = prompt_speech_ids[mask.bool()]
        if real_ids.numel() and (int(real_ids.min()) < 0 or int(real_ids.max()) >= self.config.speech_token_size):
            raise ValueError(
                f"prompt_speech_ids must be codebook ids in [0, {self.config.speech_token_size}) (no stop ids); got "
                f"values in [{int(real_ids.min())}, {int(real_ids.max())}]."
            )
        return self.embed_speech(prompt_speech_ids, mask), mask

    def embed_prompt(
        self,
        text_ids: torch.LongTensor,
        text_attention_mask: torch.Tensor | None = None,
        prompt_speech_ids: torch.LongTensor | None = None,
        prompt_speech_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.LongTensor]:
        """
        Embeddings of ``[sos, text, task_id, prompt_speech]`` per sample, LEFT-padded (every prompt ends at the last
        column, so generation appends speech tokens to all samples at once). ``prompt_speech`` is the optional
        zero-shot (voice cloning) prompt: the speech tokens of the prompt utterance, whose transcript leads the text.

        Returns ``(inputs_embeds (B, L, D), attention_mask (B, L) long)`` with ``L = max(text + prompt speech) + 2``.
        """
        text_attention_mask = self._text_mask(text_ids, text_attention_mask)
        batch_size = text_ids.shape[0]
        prompt_embeds, prompt_mask = self._prompt_speech(batch_size, prompt_speech_ids, prompt_speech_attention_mask)
        text_lengths = text_attention_mask.sum(dim=1)
        prompt_lengths = prompt_mask.sum(dim=1)
        prompt_length = int((text_lengths + prompt_lengths).max()) + 2
        text_embeds = self.embed_text(text_ids, text_attention_mask)

        starts = prompt_length - (text_lengths + prompt_lengths + 2)  # first real column of each left-padded row
        embeds = text_embeds.new_zeros(batch_size, prompt_length, text_embeds.shape[-1])
        batch_index = torch.arange(batch_size, device=text_ids.device)
        embeds = embeds.index_put(
            (batch_index, starts), self._special_embedding(self.config.sos_id, batch_size).to(embeds.dtype)
        )
        rows, cols = text_attention_mask.bool().nonzero(as_tuple=True)
        rank_in_text = text_attention_mask.cumsum(dim=1)[rows, cols] - 1
        embeds = embeds.index_put((rows, starts[rows] + 1 + rank_in_text), text_embeds[rows, cols])
        task_columns = starts + text_lengths + 1
        embeds = embeds.index_put(
            (batch_index, task_columns), self._special_embedding(self.config.task_id, batch_size).to(embeds.dtype)
        )
        if prompt_embeds is not None:
            rows, cols = prompt_mask.bool().nonzero(as_tuple=True)
            rank = prompt_mask.cumsum(dim=1)[rows, cols] - 1
            embeds = embeds.index_put(
                (rows, task_columns[rows] + 1 + rank), prompt_embeds[rows, cols].to(embeds.dtype)
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

    def bistream_full_chunks(self, text_lengths: torch.Tensor, bistream: torch.Tensor | None) -> torch.LongTensor:
        """Per sample, the number of full ``(text_chunk, speech_chunk)`` blocks of its bistream layout (0 when the
        sample is unistream): ``text_length // bistream_text_chunk``, as upstream's ``prepare_lm_input_target``."""
        if bistream is None:
            return torch.zeros_like(text_lengths)
        return torch.where(bistream.to(text_lengths.device).bool(), text_lengths // self.config.bistream_text_chunk, 0)

    def forward(
        self,
        text_ids: torch.LongTensor,
        text_attention_mask: torch.Tensor | None = None,
        speech_ids: torch.LongTensor | None = None,
        speech_attention_mask: torch.Tensor | None = None,
        speech_token_probs: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        prompt_speech_ids: torch.LongTensor | None = None,
        prompt_speech_attention_mask: torch.Tensor | None = None,
        bistream: torch.BoolTensor | None = None,
        **kwargs,
    ) -> CosyVoice2LMOutput:
        r"""
        Teacher-forced pass over ``[sos, text, task_id, prompt_speech, speech]`` per sample (or its bistream layout).

        Args:
            text_ids (`torch.LongTensor` of shape `(batch_size, text_length)`):
                Text token ids (any padding side; padding is given by `text_attention_mask`). In zero-shot mode the
                prompt's transcript comes first: `prompt_text + text`.
            text_attention_mask (`torch.Tensor` of shape `(batch_size, text_length)`, *optional*):
                1 for real text tokens. Every sample needs at least one.
            speech_ids (`torch.LongTensor` of shape `(batch_size, speech_length)`, *optional*):
                Speech tokens, right-padded. Without speech (and without `speech_token_probs`) only the first speech
                token is predicted.
            speech_attention_mask (`torch.Tensor` of shape `(batch_size, speech_length)`, *optional*):
                1 for real speech tokens, right-padded.
            speech_token_probs (`torch.Tensor` of shape `(batch_size, speech_length, V)`, *optional*):
                Soft speech tokens (`V <= speech_vocab_size`), embedded as `probs @ speech_embedding.weight[:V]`.
            labels (`torch.LongTensor` of shape `(batch_size, W)`, *optional*):
                Targets for `logits`; `-100` is ignored. Unistream: speech tokens then eos (`W = speech_length + 1`).
            prompt_speech_ids (`torch.LongTensor` of shape `(batch_size, prompt_length)`, *optional*):
                Zero-shot prompt speech tokens (right-padded), read after `task_id` and never predicted.
            prompt_speech_attention_mask (`torch.Tensor` of shape `(batch_size, prompt_length)`, *optional*):
                1 for real prompt speech tokens.
            bistream (`torch.BoolTensor` of shape `(batch_size,)`, *optional*):
                True for samples laid out as CosyVoice2's bistream training sequence
                `[sos, 5 text, 15 speech, ..., remaining text, task_id, remaining speech]` (chunk sizes from the
                config; CosyVoice3 reads its text up to `<|endofprompt|>` before the first chunk). Their targets
                interleave a fill id after every full speech chunk (see
                `DataCollatorForCosyVoice2(bistream_probability=...)`). Such samples take no prompt speech.

        `logits[b, m]` predicts the `m`-th target of sample `b`: speech token `m` for unistream samples (the last
        one, `m = S_b`, predicts eos); for bistream samples the targets are the speech tokens with the fill id
        inserted after each full speech chunk, then eos. The width is `speech_length + max(full chunks) + 1`.
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
        prompt_embeds, prompt_mask = self._prompt_speech(batch_size, prompt_speech_ids, prompt_speech_attention_mask)

        text_lengths = text_attention_mask.sum(dim=1)
        speech_lengths = speech_attention_mask.sum(dim=1)
        prompt_lengths = prompt_mask.sum(dim=1)
        # Bistream rows read a prefix (CosyVoice3: the instruction up to <|endofprompt|>) before their chunks;
        # unistream rows are laid out the same with or without one, so their prefix is taken as 0.
        prefix = torch.zeros_like(text_lengths)
        if bistream is not None:
            prefix = torch.where(
                bistream.to(device).bool(), self.bistream_prefix_lengths(text_ids, text_attention_mask), 0
            )
        full_chunks = self.bistream_full_chunks(text_lengths - prefix, bistream)
        self._check_bistream(bistream, full_chunks, speech_lengths, prompt_lengths, batch_size)
        text_chunk, speech_chunk = self.config.bistream_text_chunk, self.config.bistream_speech_chunk
        block = text_chunk + speech_chunk
        # Unistream samples are the special case full_chunks = 0: [sos, text, task_id, prompt, speech].
        chunks_start = 1 + prefix
        tail_start = chunks_start + full_chunks * block
        task_positions = tail_start + text_lengths - prefix - full_chunks * text_chunk
        sequence_lengths = text_lengths + prompt_lengths + speech_lengths + 2
        total_length = int(sequence_lengths.max())
        text_embeds = self.embed_text(text_ids, text_attention_mask)
        batch_index = torch.arange(batch_size, device=device)

        # Packed left-aligned, so every sample gets positions 0..len-1 and the backbone's default position ids fit.
        inputs_embeds = text_embeds.new_zeros(batch_size, total_length, text_embeds.shape[-1])
        inputs_embeds = inputs_embeds.index_put(
            (batch_index, torch.zeros_like(text_lengths)),
            self._special_embedding(self.config.sos_id, batch_size).to(inputs_embeds.dtype),
        )
        rows, cols = text_attention_mask.bool().nonzero(as_tuple=True)
        rank = text_attention_mask.cumsum(dim=1)[rows, cols] - 1
        chunked_rank = rank - prefix[rows]
        chunk = chunked_rank.clamp(min=0) // text_chunk
        in_block = chunk < full_chunks[rows]
        text_positions = torch.where(
            in_block,
            chunks_start[rows] + chunk * block + chunked_rank % text_chunk,
            tail_start[rows] + chunked_rank - full_chunks[rows] * text_chunk,
        )
        text_positions = torch.where(chunked_rank < 0, 1 + rank, text_positions)
        inputs_embeds = inputs_embeds.index_put((rows, text_positions), text_embeds[rows, cols])
        inputs_embeds = inputs_embeds.index_put(
            (batch_index, task_positions),
            self._special_embedding(self.config.task_id, batch_size).to(inputs_embeds.dtype),
        )
        if prompt_embeds is not None:
            rows, cols = prompt_mask.bool().nonzero(as_tuple=True)
            rank = prompt_mask.cumsum(dim=1)[rows, cols] - 1
            inputs_embeds = inputs_embeds.index_put(
                (rows, task_positions[rows] + 1 + rank), prompt_embeds[rows, cols].to(inputs_embeds.dtype)
            )
        if speech_embeds is not None:
            rows, cols = speech_attention_mask.bool().nonzero(as_tuple=True)
            rank = speech_attention_mask.cumsum(dim=1)[rows, cols] - 1
            chunk = rank // speech_chunk
            in_block = chunk < full_chunks[rows]
            speech_positions = torch.where(
                in_block,
                chunks_start[rows] + chunk * block + text_chunk + rank % speech_chunk,
                task_positions[rows] + 1 + prompt_lengths[rows] + rank - full_chunks[rows] * speech_chunk,
            )
            inputs_embeds = inputs_embeds.index_put(
                (rows, speech_positions), speech_embeds[rows, cols].to(inputs_embeds.dtype)
            )
        columns = torch.arange(total_length, device=device).unsqueeze(0)
        attention_mask = (columns < sequence_lengths.unsqueeze(1)).long()

        kwargs.pop("use_cache", None)
        kwargs.pop("return_dict", None)
        hidden_states = self.model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, **kwargs
        ).last_hidden_state

        # Target m of a sample is predicted by the hidden state just before the token it names: in a full block,
        # the last text token predicts its first speech token and the last speech token predicts the fill id; in
        # the tail, task_id (or the last prompt speech token) predicts the first remaining speech token.
        targets_per_block = speech_chunk + 1
        offsets = torch.arange(speech_width + int(full_chunks.max()) + 1, device=device).unsqueeze(0)
        logits_mask = offsets <= (speech_lengths + full_chunks).unsqueeze(1)
        target_block = offsets // targets_per_block
        gather_positions = torch.where(
            target_block < full_chunks.unsqueeze(1),
            chunks_start.unsqueeze(1) + target_block * block + text_chunk - 1 + offsets % targets_per_block,
            (task_positions + prompt_lengths).unsqueeze(1) + offsets - (full_chunks * targets_per_block).unsqueeze(1),
        ).clamp(max=total_length - 1)
        speech_hidden = hidden_states[batch_index.unsqueeze(1), gather_positions]
        logits = self.llm_decoder(speech_hidden)

        loss = None
        if labels is not None:
            if bistream is not None and bool(full_chunks.any()):
                self._check_bistream_labels(labels, full_chunks, logits_mask)
            loss = self.loss_function_cosyvoice2(logits, labels, logits_mask)
        return CosyVoice2LMOutput(loss=loss, logits=logits, logits_mask=logits_mask)

    def _check_bistream(self, bistream, full_chunks, speech_lengths, prompt_lengths, batch_size) -> None:
        if bistream is None:
            return
        if tuple(bistream.shape) != (batch_size,):
            raise ValueError(f"bistream must be a ({batch_size},) bool tensor, got shape {tuple(bistream.shape)}.")
        bistream = bistream.to(full_chunks.device).bool()
        if bool(bistream.any()) and self.config.speech_fill_id is None:
            raise ValueError(
                "Bistream samples need the fill id speech_token_size + 2, but the model has only "
                f"{self.config.num_special_speech_tokens} special speech ids."
            )
        with_prompt = (bistream & (prompt_lengths > 0)).nonzero().flatten().tolist()
        if with_prompt:
            raise ValueError(f"Samples {with_prompt} are bistream and have prompt speech; train those unistream.")
        short = (full_chunks * self.config.bistream_speech_chunk > speech_lengths).nonzero().flatten().tolist()
        if short:
            raise ValueError(
                f"Bistream samples {short} have fewer speech tokens than their full text chunks need "
                f"({self.config.bistream_speech_chunk} per {self.config.bistream_text_chunk} text tokens); upstream "
                "only lays out samples whose speech/text ratio exceeds speech_chunk / text_chunk."
            )

    def _check_bistream_labels(self, labels, full_chunks, logits_mask) -> None:
        width = labels.shape[1]
        columns = torch.arange(width, device=labels.device).unsqueeze(0)
        per_block = self.config.bistream_speech_chunk + 1
        expected_fill = ((columns % per_block) == per_block - 1) & (columns // per_block < full_chunks[:, None])
        targets = labels.to(logits_mask.device)
        if targets.shape != logits_mask.shape:
            return  # loss_function_cosyvoice2 names the shape mismatch
        missing = expected_fill.to(targets.device) & (targets != self.config.speech_fill_id)
        if bool(missing.any()):
            bad = missing.any(dim=1).nonzero().flatten().tolist()
            raise ValueError(
                f"labels of bistream samples {bad} lack the fill id {self.config.speech_fill_id} after each full "
                f"speech chunk of {self.config.bistream_speech_chunk}; build them with DataCollatorForCosyVoice2 "
                "using the model's bistream chunk sizes."
            )

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
    def from_cosyvoice(cls, model_dir_or_llm_pt: str | os.PathLike, llm_config=None, **kwargs) -> CosyVoice2LM:
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
