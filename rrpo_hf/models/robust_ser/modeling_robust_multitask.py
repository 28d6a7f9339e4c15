"""The multi-task token reward model of DiffRO (arXiv 2507.05911): one speech-token encoder, one head per task.

DiffRO scores the policy's speech tokens with a single token-input encoder shared by several heads, trained on
pseudo-labels: ASR (``R_ASR = log P_ASR(text | tokens)``), speech emotion, and speech quality (MOS in 5 levels).
Here the encoder is RobustSER's (token embedding from ids or token distributions -> Transformer -> h'), and:

* ``emotion``: RobustSER's head exactly (masked pooling + classifier, :meth:`classify`), so RRPO's adversarial
  step on h' and the emotion losses of :mod:`rrpo_hf.ops` apply unchanged;
* ``asr``: a frame-wise linear layer over h' to ``len(asr_labels) + 1`` classes (CTC, blank = 0);
* ``quality``: its own masked pooling of h' + a linear layer to the quality classes.

Energy-Adaptive Mixup regularizes the emotion head only. A mixed sample carries a partner's segment at -5..5 dB, so
its transcript and its quality label no longer describe its features; when the batch carries an EAM plan, the ASR
and quality heads read a second, un-mixed encoder pass of the same batch (run as one pass over both halves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

# Absolute on purpose, as in modeling_robust_ser.py: `save_pretrained` copies these modules next to this file and
# rewrites the lines to same-folder imports (remote_code.py).
from rrpo_hf.ops.ctc import ctc_greedy_decode, ctc_log_likelihood, ctc_min_input_lengths
from rrpo_hf.ops.eam import EAM_PLAN_KEYS
from rrpo_hf.ops.label_smoothing import mixup_emotion_loss

from .configuration_robust_multitask import RobustMultiTaskRMConfig
from .modeling_robust_ser import (
    RobustSERForAudioClassification,
    RobustSERModel,
    RobustSERPooling,
    RobustSERPreTrainedModel,
    eam_partner_labels,
)


@dataclass
class RobustMultiTaskRMOutput(ModelOutput):
    r"""
    Output of [`RobustSERForMultiTaskReward`]. A head the model does not have leaves its fields `None`.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            `emotion_loss + asr_loss_weight * asr_loss + quality_loss_weight * quality_loss` over the losses whose
            labels were given.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Emotion logits (from the EAM-mixed features when the batch carries a plan).
        asr_logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, len(asr_labels) + 1)`):
            Frame-wise CTC logits (class 0 = blank), from the un-mixed features.
        quality_logits (`torch.FloatTensor` of shape `(batch_size, len(quality_labels))`):
            Quality-class logits (worst first), from the un-mixed features.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            h' as the emotion head reads it (mixed under EAM): the tensor RRPO's adversarial step perturbs.
        attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            The mask used for h'.
        mixup_lambda (`torch.FloatTensor` of shape `(batch_size,)`):
            EAM coefficients of the emotion loss (zeros without a plan).
        partner_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Emotion labels of each sample's EAM partner.
        emotion_loss, asr_loss, quality_loss (`torch.FloatTensor` of shape `()`, *optional*):
            The per-task terms of `loss` (Eq. 3; CTC per target symbol, batch mean; cross-entropy).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    asr_logits: torch.FloatTensor | None = None
    quality_logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    attention_mask: torch.LongTensor | None = None
    mixup_lambda: torch.FloatTensor | None = None
    partner_labels: torch.LongTensor | None = None
    emotion_loss: torch.FloatTensor | None = None
    asr_loss: torch.FloatTensor | None = None
    quality_loss: torch.FloatTensor | None = None


def encode_symbol_texts(
    texts: list[str], symbol_to_id: dict[str, int], labels: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Space-separated symbol texts -> ``(targets (B, U_max) long, right-padded with 0; target_lengths (B,))``.

    ``symbol_to_id`` maps each ASR symbol to its CTC class (``labels[i]`` -> ``i + 1``; 0 is the blank).
    """
    if isinstance(texts, str):
        raise TypeError("`texts` must be a list of strings (a batch), not a single string.")
    encoded = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"Text {index} is a {type(text).__name__}, expected a string of space-separated symbols.")
        symbols = text.split()
        if not symbols:
            raise ValueError(
                f"Text {index} is empty: the ASR head needs a transcript of space-separated symbols. Filter out rows "
                "without text."
            )
        ids = []
        for symbol in symbols:
            class_id = symbol_to_id.get(symbol)
            if class_id is None:
                shown = labels if len(labels) <= 40 else labels[:40] + ["..."]
                raise ValueError(
                    f"Text {index} ({text!r}) has the symbol {symbol!r}, which is not in the ASR vocabulary "
                    f"(asr_labels: {shown}). Map or filter such texts, or train a reward model whose asr_labels "
                    "include it (train_rm.py reads the symbols from the training texts)."
                )
            ids.append(class_id)
        encoded.append(ids)
    lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.long)
    targets = torch.zeros(len(encoded), int(lengths.max()) if len(encoded) else 0, dtype=torch.long)
    for row, ids in enumerate(encoded):
        targets[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return targets, lengths


class RobustSERForMultiTaskReward(RobustSERPreTrainedModel):
    """The [`RobustSERModel`] encoder with an emotion, an ASR (CTC) and a quality head; only the heads of
    `config.tasks` exist.

    Module names are RobustSER's (`robust_ser` for the encoder, `pooler`, `classifier`), so a
    [`RobustSERForAudioClassification`] checkpoint fills the shared encoder and the emotion head:
    [`from_robust_ser`] (every weight of the checkpoint is used; the new heads start fresh).
    """

    config_class = RobustMultiTaskRMConfig
    config: RobustMultiTaskRMConfig

    def __init__(self, config: RobustMultiTaskRMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.tasks = tuple(config.tasks)
        self.robust_ser = RobustSERModel(config, init_by_head=True)
        if "emotion" in self.tasks:
            self.pooler = RobustSERPooling(config)
            self.classifier_dropout = nn.Dropout(config.hidden_dropout_prob)
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        if "asr" in self.tasks:
            self.asr_dropout = nn.Dropout(config.hidden_dropout_prob)
            self.asr_head = nn.Linear(config.hidden_size, config.num_asr_classes)
            self._asr_symbol_to_id = {symbol: i + 1 for i, symbol in enumerate(config.asr_labels)}
        if "quality" in self.tasks:
            self.quality_pooler = RobustSERPooling(config)
            self.quality_dropout = nn.Dropout(config.hidden_dropout_prob)
            self.quality_head = nn.Linear(config.hidden_size, config.num_quality_labels)
        self.post_init()

    # ------------------------------------------------------------------------------------------------ heads
    def _require(self, task: str) -> None:
        if task not in self.tasks:
            raise ValueError(
                f"This reward model has no '{task}' head (tasks={list(self.tasks)}); build or train one with "
                f"tasks including '{task}' (train_rm.py: --tasks {','.join([*self.tasks, task])})."
            )

    def classify(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The emotion head (RobustSER's): `classify(h' + delta, mask)` is RRPO's adversarial logit."""
        self._require("emotion")
        return RobustSERForAudioClassification.classify(self, hidden_states, attention_mask)

    def transcribe(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The ASR head: frame-wise CTC logits (B, L, len(asr_labels) + 1), class 0 the blank."""
        self._require("asr")
        return self.asr_head(self.asr_dropout(hidden_states))

    def rate_quality(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The quality head: masked pooling of h' + linear layer -> (B, len(quality_labels)) logits, worst first."""
        self._require("quality")
        if attention_mask is None:
            attention_mask = torch.ones(hidden_states.shape[:2], dtype=torch.long, device=hidden_states.device)
        return self.quality_head(self.quality_dropout(self.quality_pooler(hidden_states, attention_mask)))

    # ------------------------------------------------------------------------------------------------ ASR text
    def encode_asr_targets(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Space-separated symbol texts -> `(targets (B, U_max) long, padded with 0, target_lengths (B,))`.

        Symbol `asr_labels[i]` is class `i + 1` (0 is the CTC blank). An unknown symbol raises an error naming the
        symbol, the text's index and the fix.
        """
        self._require("asr")
        return encode_symbol_texts(texts, self._asr_symbol_to_id, list(self.config.asr_labels))

    def asr_log_likelihood(
        self,
        asr_logits: torch.Tensor,
        attention_mask: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
        zero_infinity: bool = False,
    ) -> torch.Tensor:
        """Per-sample `log P_ASR(target | tokens)` (B,): CTC over the valid frames of `asr_logits` (float32)."""
        log_probs = torch.log_softmax(asr_logits.float(), dim=-1)
        return ctc_log_likelihood(
            log_probs, attention_mask.long().sum(dim=1), targets, target_lengths, blank=0, zero_infinity=zero_infinity
        )

    def decode_asr(self, asr_logits: torch.Tensor, attention_mask: torch.Tensor) -> list[str]:
        """Greedy (best-path) CTC transcripts, as space-separated symbols."""
        self._require("asr")
        labels = self.config.asr_labels
        decoded = ctc_greedy_decode(asr_logits, attention_mask.long().sum(dim=1), blank=0)
        return [" ".join(labels[class_id - 1] for class_id in ids) for ids in decoded]

    # ------------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        input_token_probs: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        asr_targets: torch.LongTensor | None = None,
        asr_target_lengths: torch.LongTensor | None = None,
        quality_labels: torch.LongTensor | None = None,
        eam_partner: torch.LongTensor | None = None,
        eam_mix_length: torch.LongTensor | None = None,
        eam_start: torch.LongTensor | None = None,
        eam_partner_start: torch.LongTensor | None = None,
        eam_snr_db: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RobustMultiTaskRMOutput | tuple:
        r"""
        input_ids, input_token_probs, inputs_embeds, attention_mask:
            As in [`RobustSERForAudioClassification.forward`]: exactly one input path (ids, token distributions for
            DiffRO, or the features F).
        labels (`torch.LongTensor` of shape `(batch_size,)`):
            Emotion ids; Eq. 3 loss with `config.label_smoothing`.
        asr_targets (`torch.LongTensor` of shape `(batch_size, max_target_length)`), asr_target_lengths (`(B,)`):
            CTC targets from [`encode_asr_targets`]; the ASR loss is `-log P / target length`, averaged over the batch
            (`F.ctc_loss`'s "mean"). A target that needs more frames than its sample has raises.
        quality_labels (`torch.LongTensor` of shape `(batch_size,)`):
            Quality class ids in `[0, len(quality_labels))`; cross-entropy loss.
        eam_partner, eam_mix_length, eam_start, eam_partner_start, eam_snr_db (`torch.Tensor`, each `(batch_size,)`):
            An EAM plan, applied to the emotion head's features only (module docstring).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        given = [value for value in (input_ids, input_token_probs, inputs_embeds) if value is not None]
        if given:  # labels are checked before the encoder runs (the encoder checks the inputs themselves)
            self._check_label_inputs(labels, asr_targets, asr_target_lengths, quality_labels, given[0].shape[0])
        plan = (eam_partner, eam_mix_length, eam_start, eam_partner_start, eam_snr_db)
        if any(value is not None for value in plan) and "emotion" not in self.tasks:
            raise ValueError(
                f"An EAM plan was given but this model has no emotion head (tasks={list(self.tasks)}); EAM "
                "regularizes the emotion head only. Drop the plan (use_eam=False)."
            )
        encoded = self.robust_ser(
            input_ids=input_ids,
            input_token_probs=input_token_probs,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            **dict(zip(EAM_PLAN_KEYS, plan)),
            # The ASR and quality heads read h' of the un-mixed features (module docstring).
            return_unmixed_hidden_state=any(task != "emotion" for task in self.tasks),
            return_dict=True,
        )
        hidden_states, attention_mask, mixup_lambda = (
            encoded.last_hidden_state,
            encoded.attention_mask,
            encoded.mixup_lambda,
        )
        clean_states = hidden_states if encoded.unmixed_hidden_state is None else encoded.unmixed_hidden_state
        partner_labels = eam_partner_labels(labels, eam_partner)

        logits = self.classify(hidden_states, attention_mask) if "emotion" in self.tasks else None
        asr_logits = self.transcribe(clean_states) if "asr" in self.tasks else None
        quality_logits = self.rate_quality(clean_states, attention_mask) if "quality" in self.tasks else None

        emotion_loss = asr_loss = quality_loss = None
        if labels is not None:
            emotion_loss = mixup_emotion_loss(
                logits,
                labels,
                partner_labels,
                mixup_lambda if partner_labels is not None else None,
                epsilon=self.config.label_smoothing,
            )
        if asr_targets is not None:
            asr_loss = self.asr_ctc_loss(asr_logits, attention_mask, asr_targets, asr_target_lengths)
        if quality_labels is not None:
            quality_loss = F.cross_entropy(quality_logits.float(), quality_labels.long())
        terms = [
            (emotion_loss, 1.0),
            (asr_loss, float(self.config.asr_loss_weight)),
            (quality_loss, float(self.config.quality_loss_weight)),
        ]
        given_terms = [weight * term for term, weight in terms if term is not None]
        loss = sum(given_terms[1:], given_terms[0]) if given_terms else None

        output = RobustMultiTaskRMOutput(
            loss=loss,
            logits=logits,
            asr_logits=asr_logits,
            quality_logits=quality_logits,
            last_hidden_state=hidden_states,
            attention_mask=attention_mask,
            mixup_lambda=mixup_lambda,
            partner_labels=partner_labels,
            emotion_loss=emotion_loss,
            asr_loss=asr_loss,
            quality_loss=quality_loss,
        )
        return output if return_dict else output.to_tuple()

    def asr_ctc_loss(
        self,
        asr_logits: torch.Tensor,
        attention_mask: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> torch.Tensor:
        """The training CTC loss: `mean_b(-log P(target_b) / U_b)`; raises for a target longer than its speech."""
        input_lengths = attention_mask.long().sum(dim=1)
        needed = ctc_min_input_lengths(targets, target_lengths)
        short = (input_lengths.to(needed.device) < needed).nonzero().flatten()
        if short.numel():
            sample = int(short[0])
            raise ValueError(
                f"Samples {short.tolist()} have fewer speech frames than their transcript needs (sample {sample}: "
                f"{int(input_lengths[sample])} frames, {int(needed[sample])} needed: one per symbol plus a blank "
                "between repeats), so log P_ASR = -inf. Filter such rows out, or do not truncate the speech."
            )
        log_likelihood = self.asr_log_likelihood(asr_logits, attention_mask, targets, target_lengths)
        return (-log_likelihood / target_lengths.to(log_likelihood.device).clamp_min(1)).mean()

    def _check_label_inputs(self, labels, asr_targets, asr_target_lengths, quality_labels, batch_size: int) -> None:
        for task, value in (("emotion", labels), ("asr", asr_targets), ("quality", quality_labels)):
            if value is not None:
                self._require(task)
        if (asr_targets is None) != (asr_target_lengths is None):
            raise ValueError(
                "Pass both `asr_targets` and `asr_target_lengths` (from `encode_asr_targets`) or neither."
            )
        if labels is not None and labels.shape != (batch_size,):
            raise ValueError(f"`labels` must have shape ({batch_size},), got {tuple(labels.shape)}.")
        if quality_labels is not None:
            if quality_labels.shape != (batch_size,):
                raise ValueError(
                    f"`quality_labels` must have shape ({batch_size},), got {tuple(quality_labels.shape)}."
                )
            num = self.config.num_quality_labels
            if bool(((quality_labels < 0) | (quality_labels >= num)).any()):
                raise ValueError(
                    f"`quality_labels` must be class ids in [0, {num}) (quality_labels={self.config.quality_labels}), "
                    f"got {quality_labels.tolist()}."
                )
        if asr_targets is not None and (
            asr_targets.dim() != 2 or asr_targets.shape[0] != batch_size or asr_target_lengths.shape != (batch_size,)
        ):
            raise ValueError(
                f"`asr_targets` must be ({batch_size}, max_target_length) and `asr_target_lengths` ({batch_size},), "
                f"got {tuple(asr_targets.shape)} and {tuple(asr_target_lengths.shape)}."
            )

    # ------------------------------------------------------------------------------------------------ from SER
    @classmethod
    def from_robust_ser(
        cls,
        model_or_path,
        tasks: list[str] | None = None,
        asr_labels: list[str] | None = None,
        quality_labels: list[str] | None = None,
        **config_overrides,
    ) -> RobustSERForMultiTaskReward:
        """A multi-task model whose shared encoder (and emotion head) are a trained RobustSER's.

        `model_or_path` is a [`RobustSERForAudioClassification`] or a folder / Hub id of one (loaded with
        `AutoModelForAudioClassification`; pass `trust_remote_code=True` in `config_overrides` for a remote-code
        checkpoint). The config keeps every encoder field and the label set of the SER model; `tasks`, `asr_labels`,
        `quality_labels` and `config_overrides` are the new ones. Every SER weight is copied (the emotion head's too
        when `"emotion"` is in `tasks`); the ASR and quality heads start from the usual initialisation.
        """
        from transformers import AutoModelForAudioClassification

        if isinstance(model_or_path, (str, Path)):
            load_kwargs = {}
            if "trust_remote_code" in config_overrides:
                load_kwargs["trust_remote_code"] = config_overrides.pop("trust_remote_code")
            model_or_path = AutoModelForAudioClassification.from_pretrained(str(model_or_path), **load_kwargs)
        ser = model_or_path
        if getattr(ser.config, "model_type", None) != "robust_ser":
            raise TypeError(
                f"from_robust_ser needs a RobustSER emotion model (model_type 'robust_ser'), got "
                f"{type(ser).__name__} with model_type {getattr(ser.config, 'model_type', None)!r}. A multi-task "
                "checkpoint loads with AutoModel.from_pretrained."
            )
        new_fields = dict(tasks=tasks, asr_labels=asr_labels, **config_overrides)
        if quality_labels is not None:
            new_fields["quality_labels"] = quality_labels
        model = cls(RobustMultiTaskRMConfig.from_robust_ser_config(ser.config, **new_fields))
        state = ser.state_dict()
        if "emotion" not in model.tasks:
            state = {key: value for key, value in state.items() if not key.startswith(("pooler.", "classifier."))}
        result = model.load_state_dict(state, strict=False)
        fresh = {key for key in model.state_dict() if key.startswith(("asr_", "quality_"))}
        unexpected, missing = list(result.unexpected_keys), [k for k in result.missing_keys if k not in fresh]
        if unexpected or missing:
            raise RuntimeError(
                f"The RobustSER weights do not fit the multi-task model: unused {unexpected}, missing {missing}. Is "
                "the checkpoint a RobustSERForAudioClassification?"
            )
        return model.to(next(ser.parameters()).device)


def quality_values(quality_labels: list[str]) -> torch.Tensor:
    """The score of each quality class: the labels as numbers when they all are (MOS "1".."5"), else 1..Q."""
    try:
        values = [float(label) for label in quality_labels]
    except ValueError:
        values = [float(i + 1) for i in range(len(quality_labels))]
    if not all(math.isfinite(v) for v in values):
        values = [float(i + 1) for i in range(len(quality_labels))]
    return torch.tensor(values)


__all__ = [
    "RobustMultiTaskRMOutput",
    "RobustSERForMultiTaskReward",
    "encode_symbol_texts",
    "quality_values",
]
