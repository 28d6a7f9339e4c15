"""RobustSER: the speech-emotion reward model of RRPO (stage 1), over discrete speech tokens.

Forward path (paper Sec. 2.2): token embedding gives the low-level features F -> Energy-Adaptive
Mixup when the batch carries a plan (Algorithm 1) -> Transformer encoder -> high-level embeddings
h' -> masked attention pooling -> classifier. The loss is Eq. 3 over Eq. 2-smoothed targets.
The head is exposed as :meth:`RobustSERForAudioClassification.classify` so an adversarial step
(Eq. 4-5) evaluates ``classify(h' + delta)`` without a second encoder pass.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

# The equations live once, in rrpo_hf/ops. They (and the consistent-save helpers) are imported with
# absolute paths on purpose: transformers' remote-code copier follows only same-folder `from .x import`
# lines (a `from ...ops` line would make it look for a missing file), so `save_pretrained` (`remote_code.py`)
# copies these modules next to this file and rewrites these lines to `from .x import` in the saved copy.
from rrpo_hf.ops.eam import EAM_PLAN_KEYS, apply_energy_adaptive_mixup
from rrpo_hf.ops.gumbel import soft_token_embedding
from rrpo_hf.ops.label_smoothing import mixup_emotion_loss
from rrpo_hf.utils.saving import ConsistentSaveMixin

from .configuration_robust_ser import RobustSERConfig
from .remote_code import bundle_remote_code_dependencies


@dataclass
class RobustSEROutput(ModelOutput):
    r"""
    Output of [`RobustSERForAudioClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Eq. 3 loss: label-smoothed cross-entropy, interpolated with the partner label by `mixup_lambda`.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Emotion logits.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            The high-level embeddings h' (encoder output), the tensor the adversarial step perturbs.
        attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            The mask used for h' (derived from the pad id when not given), to pass on to `classify`.
        mixup_lambda (`torch.FloatTensor` of shape `(batch_size,)`):
            Energy-adaptive mixing coefficients (all zero without an EAM plan).
        partner_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Labels of each sample's EAM partner (when both a plan and `labels` are given).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    attention_mask: torch.LongTensor | None = None
    mixup_lambda: torch.FloatTensor | None = None
    partner_labels: torch.LongTensor | None = None


class RobustSERTokenEmbedding(nn.Embedding):
    """Speech-token embedding (codebook + one zero padding row) that also embeds token *distributions*.

    `probs @ weight[:vocab_size]` runs inside this module's own forward so that parameter-gathering hooks
    (DeepSpeed ZeRO-3) fetch the weight for the differentiable DiffRO path too.
    """

    def __init__(self, config: RobustSERConfig):
        super().__init__(config.vocab_size + 1, config.hidden_size, padding_idx=config.pad_token_id)
        self.vocab_size = config.vocab_size

    def forward(
        self, input_ids: torch.Tensor | None = None, input_token_probs: torch.Tensor | None = None
    ) -> torch.Tensor:
        if input_token_probs is None:
            return super().forward(input_ids)
        return soft_token_embedding(input_token_probs, self.weight[: self.vocab_size])


class RobustSERSelfAttention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention` with a key-padding mask."""

    def __init__(self, config: RobustSERConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_dropout = config.attention_dropout

    def forward(self, hidden_states: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        batch_size, length, hidden = hidden_states.shape
        query, key, value = (
            self.qkv_proj(hidden_states)
            .view(batch_size, length, 3, self.num_heads, self.head_dim)
            .permute(2, 0, 3, 1, 4)
        )
        attended = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=key_padding_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        return self.out_proj(attended.transpose(1, 2).reshape(batch_size, length, hidden))


class RobustSERFeedForward(nn.Module):
    def __init__(self, config: RobustSERConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(hidden_states)))


class RobustSEREncoderLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm Transformer block (stable without warm-up at the paper's small learning rate)."""

    def __init__(self, config: RobustSERConfig):
        super().__init__()
        self.attention_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = RobustSERSelfAttention(config)
        self.feed_forward_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = RobustSERFeedForward(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.dropout(
            self.attention(self.attention_layer_norm(hidden_states), key_padding_mask)
        )
        return hidden_states + self.dropout(self.feed_forward(self.feed_forward_layer_norm(hidden_states)))


class RobustSEREncoder(nn.Module):
    """Adds learned positions to F (after EAM, so a mixed-in segment keeps the host's positions) and encodes."""

    def __init__(self, config: RobustSERConfig):
        super().__init__()
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList([RobustSEREncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(features.shape[1], device=features.device)
        hidden_states = self.dropout(features + self.position_embeddings(positions)[None])
        # (B, 1, 1, L) boolean: every query may attend to the valid keys of its own sample.
        key_padding_mask = attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            hidden_states = layer(hidden_states, key_padding_mask)
        return self.final_layer_norm(hidden_states)


class RobustSERPooling(nn.Module):
    """Masked pooling of h' over frames: learned attention weights, or a plain mean."""

    def __init__(self, config: RobustSERConfig):
        super().__init__()
        self.pooling = config.pooling
        self.score = nn.Linear(config.hidden_size, 1) if config.pooling == "attention" else None

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        valid = attention_mask.bool()
        if self.score is None:
            weights = valid.to(hidden_states.dtype) / valid.sum(dim=1, keepdim=True).clamp_min(1).to(
                hidden_states.dtype
            )
        else:
            scores = self.score(hidden_states).squeeze(-1)
            scores = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1)
        return torch.einsum("bl,bld->bd", weights, hidden_states)


@dataclass
class RobustSERModelOutput(ModelOutput):
    r"""
    Output of [`RobustSERModel`], the shared encoder.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            h' of the (EAM-mixed, when the batch carries a plan) features: what the emotion head reads.
        attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            The mask used for h' (derived from the pad id when not given).
        mixup_lambda (`torch.FloatTensor` of shape `(batch_size,)`):
            Energy-adaptive mixing coefficients (all zero without an EAM plan).
        unmixed_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
            h' of the un-mixed features, with `return_unmixed_hidden_state=True`: `last_hidden_state` itself without
            a plan, else a second half of the same encoder pass.
    """

    last_hidden_state: torch.FloatTensor | None = None
    attention_mask: torch.LongTensor | None = None
    mixup_lambda: torch.FloatTensor | None = None
    unmixed_hidden_state: torch.FloatTensor | None = None


class RobustSERPreTrainedModel(ConsistentSaveMixin, PreTrainedModel):
    config_class = RobustSERConfig
    config: RobustSERConfig
    # The heads hold the encoder at `self.robust_ser`. Checkpoints saved before the encoder was its own model have its
    # weights at the top level (`token_embedding.*`, `encoder.*`); `from_pretrained` adds this prefix to such keys.
    base_model_prefix = "robust_ser"
    main_input_name = "input_ids"
    _input_embed_layer = "token_embedding"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["RobustSEREncoderLayer"]
    # forward() averages its own loss; the Trainer must not rescale it by num_items_in_batch.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def _write_extra_files(self, staging_folder: Path) -> None:
        """Bundle the rrpo_hf modules the saved code needs, in the same commit as config and weights.

        The folder then loads with `AutoModelForAudioClassification.from_pretrained(dir, trust_remote_code=True)`
        in an environment without rrpo-hf. `save_pretrained(push_to_hub=True)` pushes after the commit, so the Hub
        copy is complete too.
        """
        if self.is_remote_code():
            bundle_remote_code_dependencies(staging_folder, Path(sys.modules[type(self).__module__].__file__).name)


class RobustSERModel(RobustSERPreTrainedModel):
    """The RobustSER encoder shared by every head: token ids, token distributions or the features F -> Energy-Adaptive
    Mixup (Algorithm 1, when the batch carries a plan) -> Transformer encoder -> high-level embeddings h'.

    Args:
        config ([`RobustSERConfig`]): the encoder fields of the config (a head's config works as is).
        init_by_head (`bool`, *optional*, defaults to `False`):
            Leave the weight initialisation to the head that holds this encoder: its `post_init` then initialises every
            module once, in module order, so a head built on a fixed seed gets the weights (and a seeded study the
            numbers) it got when the encoder's modules were the head's own.
    """

    def __init__(self, config: RobustSERConfig, init_by_head: bool = False):
        super().__init__(config)
        self.token_embedding = RobustSERTokenEmbedding(config)
        self.encoder = RobustSEREncoder(config)
        self._init_by_head = init_by_head
        self.post_init()
        self._init_by_head = False

    def init_weights(self):
        if not self._init_by_head:
            super().init_weights()

    # ----------------------------------------------------------------------------------------------- stages
    def embed_tokens(
        self,
        input_ids: torch.LongTensor | None = None,
        input_token_probs: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Low-level features F (B, L, D) from token ids or from token distributions (`probs @ E[:V]`).

        Ids outside the codebook at valid frames raise; padded frames (mask 0) read the zero padding row.
        """
        if (input_ids is None) == (input_token_probs is None):
            raise ValueError("embed_tokens takes exactly one of `input_ids` or `input_token_probs`.")
        vocab_size = self.config.vocab_size
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"`input_ids` must be (batch, length), got shape {tuple(input_ids.shape)}.")
            valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
            out_of_codebook = valid & ((input_ids < 0) | (input_ids >= vocab_size))
            if bool(out_of_codebook.any()):
                sample, frame = out_of_codebook.nonzero()[0].tolist()
                raise ValueError(
                    f"token id {input_ids[sample, frame].item()} out of the codebook [0, {vocab_size}) at sample "
                    f"{sample}, "
                    f"frame {frame}. Check the speech tokenizer / vocab_size (this model was configured with "
                    f"vocab_size={vocab_size}) and that padded frames have attention_mask 0."
                )
            return self.token_embedding(input_ids=input_ids.masked_fill(~valid, self.config.pad_token_id))
        if input_token_probs.dim() != 3 or input_token_probs.shape[-1] != vocab_size:
            raise ValueError(
                f"`input_token_probs` must be (batch, length, vocab_size={vocab_size}), got shape "
                f"{tuple(input_token_probs.shape)}: vocab mismatch between the policy's speech vocabulary and the "
                "reward "
                f"model's codebook. Slice the distribution to the {vocab_size} speech tokens (drop eos/special "
                "tokens)."
            )
        return self.token_embedding(input_token_probs=input_token_probs)

    def input_features(
        self,
        input_ids: torch.LongTensor | None = None,
        input_token_probs: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass's input stage: exactly one input path -> low-level features F (B, L, D), zero at padded
        frames, and the attention mask (default: `input_ids != pad_token_id`, else all ones), lengths checked."""
        inputs = {"input_ids": input_ids, "input_token_probs": input_token_probs, "inputs_embeds": inputs_embeds}
        given = [name for name, value in inputs.items() if value is not None]
        if len(given) != 1:
            raise ValueError(
                "Pass exactly one of `input_ids` (B, L), `input_token_probs` (B, L, V) or `inputs_embeds` (B, L, D); "
                f"got {given or 'none'}."
            )
        reference = inputs[given[0]]
        batch_size, length = reference.shape[:2]
        if attention_mask is None:
            attention_mask = (
                (input_ids != self.config.pad_token_id).long()
                if input_ids is not None
                else torch.ones(batch_size, length, dtype=torch.long, device=reference.device)
            )
        self._check_lengths(attention_mask, batch_size, length)

        if inputs_embeds is not None:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(
                    f"`inputs_embeds` must be (batch, length, hidden_size={self.config.hidden_size}), got "
                    f"{tuple(inputs_embeds.shape)}."
                )
            features = inputs_embeds
        else:
            features = self.embed_tokens(
                input_ids=input_ids, input_token_probs=input_token_probs, attention_mask=attention_mask
            )
        # Padded frames carry no signal, whatever the input path wrote there.
        return features * attention_mask.unsqueeze(-1).to(features.dtype), attention_mask

    def encode(self, features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """F (B, L, D) -> high-level embeddings h' (B, L, D)."""
        return self.encoder(features, attention_mask)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        input_token_probs: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        eam_partner: torch.LongTensor | None = None,
        eam_mix_length: torch.LongTensor | None = None,
        eam_start: torch.LongTensor | None = None,
        eam_partner_start: torch.LongTensor | None = None,
        eam_snr_db: torch.Tensor | None = None,
        return_unmixed_hidden_state: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RobustSERModelOutput | tuple:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            Speech tokens in `[0, vocab_size)`, padded with `pad_token_id`. Without `attention_mask`, the mask is
            `input_ids != pad_token_id`.
        input_token_probs (`torch.Tensor` of shape `(batch_size, sequence_length, vocab_size)`):
            Token distributions (soft or straight-through one-hot): F = probs @ embedding; differentiable (DiffRO).
        inputs_embeds (`torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`):
            The low-level features F directly.
        eam_partner, eam_mix_length, eam_start, eam_partner_start, eam_snr_db (`torch.Tensor`, each `(batch_size,)`):
            An Energy-Adaptive Mixup plan (see `rrpo_hf.ops.sample_eam_plan`); applied to F when given (all five).
        return_unmixed_hidden_state (`bool`, *optional*, defaults to `False`):
            Also return h' of the un-mixed features (heads that EAM does not regularise read it); with a plan, both
            are encoded in one pass over `[mixed; un-mixed]`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        features, attention_mask = self.input_features(input_ids, input_token_probs, inputs_embeds, attention_mask)
        plan = dict(zip(EAM_PLAN_KEYS, (eam_partner, eam_mix_length, eam_start, eam_partner_start, eam_snr_db)))
        missing = [name for name, value in plan.items() if value is None]
        if len(missing) == len(plan):
            hidden_states = self.encode(features, attention_mask)
            output = RobustSERModelOutput(
                last_hidden_state=hidden_states,
                attention_mask=attention_mask,
                mixup_lambda=torch.zeros(features.shape[0], device=features.device),
                unmixed_hidden_state=hidden_states if return_unmixed_hidden_state else None,
            )
            return output if return_dict else output.to_tuple()
        if missing:
            raise ValueError(f"An EAM plan needs all of {list(EAM_PLAN_KEYS)}; missing {missing}.")
        mixed_features, mixup_lambda = apply_energy_adaptive_mixup(features, attention_mask, **plan)
        unmixed_states = None
        if return_unmixed_hidden_state:
            batch_size = features.shape[0]
            both = self.encode(torch.cat([mixed_features, features]), torch.cat([attention_mask, attention_mask]))
            hidden_states, unmixed_states = both[:batch_size], both[batch_size:]
        else:
            hidden_states = self.encode(mixed_features, attention_mask)
        output = RobustSERModelOutput(
            last_hidden_state=hidden_states,
            attention_mask=attention_mask,
            mixup_lambda=mixup_lambda,
            unmixed_hidden_state=unmixed_states,
        )
        return output if return_dict else output.to_tuple()

    def _check_lengths(self, attention_mask: torch.Tensor, batch_size: int, length: int) -> None:
        if attention_mask.shape != (batch_size, length):
            raise ValueError(
                f"`attention_mask` must have shape ({batch_size}, {length}), got {tuple(attention_mask.shape)}."
            )
        if length > self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence length {length} exceeds max_position_embeddings={self.config.max_position_embeddings} of "
                "this "
                "reward model. Truncate the speech tokens (collator `max_length`) or use a config with larger "
                "max_position_embeddings."
            )
        empty = (attention_mask.sum(dim=1) == 0).nonzero().flatten()
        if empty.numel():
            raise ValueError(
                f"Samples {empty.tolist()} are empty (no valid frame in attention_mask). Filter out utterances with "
                "no "
                "speech tokens before batching."
            )


class RobustSERForAudioClassification(RobustSERPreTrainedModel):
    """Speech-emotion classifier over discrete speech tokens with the RRPO hybrid-regularised loss: the
    [`RobustSERModel`] encoder, masked pooling and a classifier."""

    def __init__(self, config: RobustSERConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.robust_ser = RobustSERModel(config, init_by_head=True)
        self.pooler = RobustSERPooling(config)
        self.classifier_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def classify(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The head: masked pooling of h' + classifier. `classify(h' + delta, mask)` is the adversarial logit."""
        if attention_mask is None:
            attention_mask = torch.ones(hidden_states.shape[:2], dtype=torch.long, device=hidden_states.device)
        return self.classifier(self.classifier_dropout(self.pooler(hidden_states, attention_mask)))

    # ------------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        input_token_probs: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        eam_partner: torch.LongTensor | None = None,
        eam_mix_length: torch.LongTensor | None = None,
        eam_start: torch.LongTensor | None = None,
        eam_partner_start: torch.LongTensor | None = None,
        eam_snr_db: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RobustSEROutput | tuple:
        r"""
        input_ids, input_token_probs, inputs_embeds, attention_mask, eam_partner, eam_mix_length, eam_start,
        eam_partner_start, eam_snr_db:
            As in [`RobustSERModel.forward`]: exactly one input path (speech tokens, token distributions for DiffRO,
            or the features F), and an optional Energy-Adaptive Mixup plan.
        labels (`torch.LongTensor` of shape `(batch_size,)`):
            Emotion ids; the loss is Eq. 3 with `config.label_smoothing`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        encoded = self.robust_ser(
            input_ids=input_ids,
            input_token_probs=input_token_probs,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            eam_partner=eam_partner,
            eam_mix_length=eam_mix_length,
            eam_start=eam_start,
            eam_partner_start=eam_partner_start,
            eam_snr_db=eam_snr_db,
            return_dict=True,
        )
        hidden_states, attention_mask, mixup_lambda = (
            encoded.last_hidden_state,
            encoded.attention_mask,
            encoded.mixup_lambda,
        )
        logits = self.classify(hidden_states, attention_mask)

        loss = partner_labels = None
        if labels is not None:
            batch_size = hidden_states.shape[0]
            if labels.shape != (batch_size,):
                raise ValueError(f"`labels` must have shape ({batch_size},), got {tuple(labels.shape)}.")
            partner_labels = eam_partner_labels(labels, eam_partner)
            loss = mixup_emotion_loss(
                logits,
                labels,
                partner_labels,
                mixup_lambda if partner_labels is not None else None,
                epsilon=self.config.label_smoothing,
            )

        output = RobustSEROutput(
            loss=loss,
            logits=logits,
            last_hidden_state=hidden_states,
            attention_mask=attention_mask,
            mixup_lambda=mixup_lambda,
            partner_labels=partner_labels,
        )
        return output if return_dict else output.to_tuple()


def eam_partner_labels(labels: torch.Tensor | None, eam_partner: torch.Tensor | None) -> torch.Tensor | None:
    """The labels of each sample's EAM partner (Eq. 3's second target), or `None` without labels or a plan."""
    if labels is None or eam_partner is None:
        return None
    return labels[eam_partner.to(labels.device).long()]


__all__ = [
    "RobustSERTokenEmbedding",
    "RobustSERForAudioClassification",
    "RobustSERModel",
    "RobustSERModelOutput",
    "RobustSEROutput",
    "RobustSERPreTrainedModel",
]
