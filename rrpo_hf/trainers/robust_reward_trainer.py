"""Trainer for the robust speech-emotion reward model (RRPO, Sec. 2.2, Eq. 2-5).

One training step:

1. ``out = model(**batch)``: token embedding -> EAM (plan drawn by the collator) -> encoder -> h' -> head;
2. ``L_emo`` = Eq. 3 on the logits with Eq. 2-smoothed targets (λ = 0 for unmixed batches);
3. Adv (``adv_alpha > 0``): ``g = dL_emo/dh'`` by ``torch.autograd.grad`` through the head only (on a detached copy
   of h'), ``δ = ε_adv·g/‖g‖`` per sample (Eq. 4), ``L_adv`` = Eq. 3 on ``model.classify(h' + δ)``. Only the small
   head runs more than once: the encoder pass and its backward are shared, so a robust step costs about a vanilla
   one (``benchmarks/rm_step.py``);
4. ``L_ser = L_emo + α·L_adv`` (Eq. 5).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Value
from huggingface_hub import EvalResult
from transformers import AutoModelForAudioClassification, PreTrainedModel, Trainer, TrainerCallback, set_seed
from transformers.trainer_utils import EvalPrediction, get_last_checkpoint

from ..data.collators import DataCollatorForEnergyAdaptiveMixup, DataCollatorForSpeechEmotion
from ..data.labels import UNKNOWN_EMOTION_FIX, UnknownEmotionError, emotion_key, emotion_label_ids, rows_with_labels
from ..data.validation import check_token_range_in_column
from ..evaluation.metrics import compute_emotion_metrics, format_emotion_eval_table
from ..models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
from ..ops import mixup_emotion_loss, robust_emotion_loss
from .base import _BaseTrainer
from .model_cards import REWARD_MODEL_CARD_TEMPLATE
from .robust_reward_config import RobustRewardConfig


logger = logging.getLogger(__name__)

SPEECH_TOKENS_COLUMN = "speech_tokens"
EVAL_TABLE_METRICS = ("wa", "ua", "macro_f1")


def ablation_row(label_smoothing: float, use_eam: bool, adv_alpha: float) -> str:
    """Name of the paper's ablation row (Table 2) that these regularization settings correspond to."""
    if adv_alpha > 0:
        return "+Adv (RRPO)" if use_eam and label_smoothing > 0 else "custom (Adv without LS+EAM)"
    if use_eam:
        return "+EAM" if label_smoothing > 0 else "custom (EAM without LS)"
    return "+LS" if label_smoothing > 0 else "base (vanilla RM)"


class RobustRewardTrainer(_BaseTrainer, Trainer):
    """Trainer for a speech-emotion reward model with the RRPO hybrid regularization (LS + EAM + Adv).

    Args:
        model (`str`, [`RobustSERConfig`] or [`~transformers.PreTrainedModel`]):
            A model to train, a config to build one from scratch, or a path / Hub id of a pretrained reward model to
            continue from (the paper's robust fine-tuning stage), loaded with `args.model_init_kwargs`.
        args ([`RobustRewardConfig`], *optional*):
            Training arguments; defaults to the paper's settings with `output_dir="outputs/reward_model"`.
        data_collator (*optional*):
            Training collator. Defaults to [`DataCollatorForEnergyAdaptiveMixup`] when `args.use_eam`, else
            [`DataCollatorForSpeechEmotion`]. Evaluation always uses [`DataCollatorForSpeechEmotion`] (no mixing).
        train_dataset ([`~datasets.Dataset`]):
            Rows with `speech_tokens` (list of token ids) and `args.label_column` (ClassLabel, emotion names — any
            alias known to `rrpo_hf.data.labels` — or label ids of the model).
        eval_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`, *optional*):
            One evaluation set, or several (a cross-corpus table: WA/UA/F1 reported per name).
        processing_class (*optional*):
            Saved with the model; speech tokens need none.
        compute_metrics (`Callable[[EvalPrediction], dict]`, *optional*):
            Defaults to WA / UA / macro-F1 ([`~rrpo_hf.evaluation.EmotionRecognitionMetrics`]).
        callbacks, optimizers, preprocess_logits_for_metrics:
            As in [`~transformers.Trainer`].
    """

    _tag_names = ["rrpo", "reward-model", "speech-emotion-recognition"]
    _name = "RobustReward"
    _model_card_template = REWARD_MODEL_CARD_TEMPLATE
    _pipeline_tag = "audio-classification"
    # EAM plans come from the collator's own seeded stream, outside the RNG state Trainer checkpoints; without it a
    # resumed run would mix its batches differently from an uninterrupted one.
    _extra_state_name = "eam_rng_state"
    _extra_state_missing = (
        "EAM plans restart from the seed, so the resumed run mixes its batches differently than an uninterrupted "
        "one (always the case with dataloader workers)."
    )
    # compute_loss returns a per-batch mean, so the Trainer divides it by the number of accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: str | RobustSERConfig | PreTrainedModel,
        args: RobustRewardConfig | None = None,
        data_collator: Callable | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: Any | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        preprocess_logits_for_metrics: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ):
        if args is None:
            args = RobustRewardConfig(output_dir="outputs/reward_model")
        elif not isinstance(args, RobustRewardConfig):
            raise TypeError(
                f"`args` must be a RobustRewardConfig (it carries the LS/EAM/Adv settings), got {type(args).__name__}."
            )
        self._base_model_id = model if isinstance(model, str) else None
        model = self._create_model(model, args)
        config = model.config
        self._check_max_length(args, config)
        self._write_regularization_to_config(config, args)

        self.label_names_in_order = [config.id2label[i] for i in range(config.num_labels)]
        if train_dataset is not None:
            train_dataset = self._prepare_dataset(train_dataset, config, args, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {
                name: self._prepare_dataset(dataset, config, args, f"eval[{name!r}]")
                for name, dataset in eval_dataset.items()
            }
        elif eval_dataset is not None:
            eval_dataset = self._prepare_dataset(eval_dataset, config, args, "eval")

        collator_kwargs = dict(
            pad_token_id=config.pad_token_id,
            label_column=args.label_column,
            # `args.max_length` truncates; without it, sequences beyond the model's positions are an error.
            max_length=args.max_length or getattr(config, "max_position_embeddings", None),
            truncation=args.max_length is not None,
            vocab_size=config.vocab_size,
            label2id=dict(config.label2id),
        )
        self.eval_data_collator = DataCollatorForSpeechEmotion(**collator_kwargs)
        if data_collator is None:
            if args.use_eam:
                data_collator = DataCollatorForEnergyAdaptiveMixup(
                    **collator_kwargs,
                    eam_probability=args.eam_probability,
                    snr_range_db=tuple(args.eam_snr_range),
                    seed=args.seed,
                )
            else:
                data_collator = self.eval_data_collator

        if compute_metrics is None:
            compute_metrics = partial(compute_emotion_metrics, label_names=self.label_names_in_order)

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )

    # ------------------------------------------------------------------ set-up

    @staticmethod
    def _create_model(model, args: RobustRewardConfig) -> PreTrainedModel:
        if isinstance(model, RobustSERConfig):
            # Seed the initialisation, as `Trainer` does for `model_init`: runs (and ranks) start from the same
            # weights.
            set_seed(args.seed)
            return RobustSERForAudioClassification(model)
        if isinstance(model, str):
            model_init_kwargs = dict(args.model_init_kwargs or {})
            return AutoModelForAudioClassification.from_pretrained(model, **model_init_kwargs)
        if isinstance(model, PreTrainedModel):
            if args.model_init_kwargs:
                raise ValueError(
                    "`model_init_kwargs` only applies when `model` is a path or Hub id; the model passed is already "
                    "instantiated. Drop `model_init_kwargs` or pass the model's path."
                )
            return model
        raise TypeError(
            f"`model` must be a path/Hub id, a RobustSERConfig or a PreTrainedModel, got {type(model).__name__}."
        )

    @staticmethod
    def _write_regularization_to_config(config, args: RobustRewardConfig) -> None:
        # Saved with the checkpoint: the DiffRO / RRPO reward built from it computes the same L_ser (Eq. 5-6).
        for name, value in args.robust_loss.to_dict().items():
            setattr(config, name, value)
        config.eam_snr_range = list(args.eam_snr_range)
        config.use_eam = args.use_eam

    @staticmethod
    def _check_max_length(args: RobustRewardConfig, config) -> None:
        # Truncating to more tokens than the model has positions would only fail later, inside the first forward.
        max_positions = getattr(config, "max_position_embeddings", None)
        if args.max_length is not None and max_positions is not None and args.max_length > max_positions:
            raise ValueError(
                f"max_length={args.max_length} exceeds the reward model's max_position_embeddings={max_positions}: "
                f"sequences longer than {max_positions} tokens cannot be encoded. Pass --max_length {max_positions} "
                f"(or less), or build the model with max_position_embeddings >= {args.max_length} "
                "(train_rm.py: --max_position_embeddings)."
            )

    def _prepare_dataset(self, dataset, config, args: RobustRewardConfig, split: str):
        """Check columns, labels and token ids before training starts; map label names onto the model's ids."""
        if not isinstance(dataset, Dataset):
            logger.warning(
                f"The {split} dataset is a {type(dataset).__name__}, not a datasets.Dataset: not validated."
            )
            return dataset
        label_column = args.label_column
        missing = [column for column in (SPEECH_TOKENS_COLUMN, label_column) if column not in dataset.column_names]
        if missing:
            raise ValueError(
                f"The {split} dataset lacks the column(s) {missing}; it has {dataset.column_names}. The reward model "
                f"needs `{SPEECH_TOKENS_COLUMN}` (list of speech token ids) and `{label_column}` (the emotion). "
                "Rename "
                f"with `dataset.rename_column(old, new)` or set `label_column`."
            )
        if len(dataset) == 0:
            raise ValueError(f"The {split} dataset is empty.")
        dataset = self._map_labels(dataset, config, label_column, split)
        self._check_speech_tokens(dataset, config, args, split)
        return dataset

    def _map_labels(self, dataset: Dataset, config, label_column: str, split: str) -> Dataset:
        feature = dataset.features[label_column]
        lookup = emotion_label_ids(config.id2label)
        model_names = [config.id2label[i] for i in range(config.num_labels)]

        def to_model_id(name: str) -> int | None:
            return lookup.get(emotion_key(name))

        if isinstance(feature, ClassLabel) or (isinstance(feature, Value) and feature.dtype == "string"):
            names = feature.names if isinstance(feature, ClassLabel) else sorted(set(dataset[label_column]), key=str)
            mapping = {name: to_model_id(str(name)) for name in names}
            unknown = sorted(str(name) for name, label_id in mapping.items() if label_id is None)
            if unknown:
                raise UnknownEmotionError(
                    f"The {split} dataset's `{label_column}` has emotion(s) {unknown} that the model cannot predict "
                    f"({rows_with_labels(dataset, label_column, unknown)}; model labels: {model_names}; "
                    f"rrpo_hf.data.labels aliases are applied automatically). {UNKNOWN_EMOTION_FIX}"
                )
            if isinstance(feature, ClassLabel):
                old_to_new = [mapping[name] for name in feature.names]
                if old_to_new == list(range(len(old_to_new))) and len(feature.names) == len(model_names):
                    return dataset
                remap = lambda batch: {label_column: [old_to_new[i] for i in batch[label_column]]}  # noqa: E731
            else:
                remap = lambda batch: {label_column: [mapping[name] for name in batch[label_column]]}  # noqa: E731
            features = dataset.features.copy()
            features[label_column] = ClassLabel(names=model_names)
            return dataset.map(remap, batched=True, features=features, desc=f"Mapping {split} emotions to model ids")

        if isinstance(feature, Value) and feature.dtype.startswith(("int", "uint")):
            labels = np.asarray(dataset.select_columns([label_column]).with_format("numpy")[:][label_column])
            bad = labels[(labels < 0) | (labels >= config.num_labels)]
            if bad.size:
                raise ValueError(
                    f"The {split} dataset's `{label_column}` has label id(s) {sorted(set(bad.tolist()))[:10]} outside "
                    f"[0, {config.num_labels}) (model labels: {model_names}). Use emotion names or a ClassLabel "
                    "column "
                    "so they are mapped onto the model's labels."
                )
            return dataset
        raise TypeError(
            f"The {split} dataset's `{label_column}` column has type {feature}; use a ClassLabel, emotion names "
            "(strings) or integer label ids."
        )

    @staticmethod
    def _check_speech_tokens(dataset: Dataset, config, args: RobustRewardConfig, split: str) -> None:
        import pyarrow.compute as pc

        max_positions = getattr(config, "max_position_embeddings", None)
        offset = 0
        for table in dataset.select_columns([SPEECH_TOKENS_COLUMN]).with_format("arrow").iter(batch_size=8192):
            column = table.column(SPEECH_TOKENS_COLUMN)
            lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
            empty = (lengths == 0).nonzero()[0]
            if empty.size:
                raise ValueError(
                    f"The {split} dataset has empty `{SPEECH_TOKENS_COLUMN}` at row(s) "
                    f"{(empty[:10] + offset).tolist()}. Filter them out: `dataset.filter(lambda x: len(x['"
                    f"{SPEECH_TOKENS_COLUMN}']) > 0)`."
                )
            if args.max_length is None and max_positions is not None:
                too_long = (lengths > max_positions).nonzero()[0]
                if too_long.size:
                    raise ValueError(
                        f"The {split} dataset has sequences longer than the model's max_position_embeddings="
                        f"{max_positions} (row {int(too_long[0]) + offset}: {int(lengths[too_long[0]])} tokens). "
                        f"Set `max_length` (<= {max_positions}) to truncate them, or filter them out."
                    )
            check_token_range_in_column(column, config.vocab_size, split, SPEECH_TOKENS_COLUMN, offset=offset)
            offset += table.num_rows

    # ------------------------------------------------------------------ data

    def get_eval_dataloader(self, eval_dataset=None):
        # Evaluation never mixes: swap in the plain collator for the duration of the dataloader construction.
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def get_test_dataloader(self, test_dataset):
        test_dataset = self._prepare_dataset(test_dataset, self.model.config, self.args, "test")
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_test_dataloader(test_dataset)
        finally:
            self.data_collator = train_collator

    # ------------------------------------------------------------------ loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Eq. 5: ``L_ser = L_emo + α·L_adv``, logging ``loss_emo``, ``loss_adv`` and the mean EAM λ."""
        labels = inputs["labels"]
        # The loss is computed here (with `args.label_smoothing`), so the model is not asked for its own.
        model_inputs = {key: value for key, value in inputs.items() if key != "labels"}
        outputs = model(**model_inputs)

        mixup_lambda = outputs.mixup_lambda if "eam_partner" in inputs else None
        partner_labels = None
        if mixup_lambda is not None:
            partner_labels = outputs.partner_labels
            if partner_labels is None:
                partner_labels = labels[inputs["eam_partner"]]
        adversarial = self.args.adv_alpha > 0 and torch.is_grad_enabled()
        # Eq. 5 with the head of the unwrapped model: `classify(h' + δ)` runs the small head only, outside the
        # output hooks of DeepSpeed's engine (whose backward prologue would otherwise fire inside autograd.grad).
        loss, loss_emo, loss_adv = robust_emotion_loss(
            self.accelerator.unwrap_model(model).classify,
            outputs.last_hidden_state,
            outputs.attention_mask,
            labels,
            self.args.robust_loss,
            logits=outputs.logits,
            partner_labels=partner_labels,
            mixup_lambda=mixup_lambda,
            adversarial=adversarial,
        )

        if model.training:
            with torch.no_grad():
                stats = [loss_emo.detach(), loss_adv.detach() if adversarial else torch.zeros_like(loss_emo)]
                stats.append(
                    mixup_lambda.detach().float().mean() if mixup_lambda is not None else torch.zeros_like(loss_emo)
                )
                stats = self.accelerator.gather_for_metrics(torch.stack(stats).float()[None]).mean(dim=0).tolist()
            self._metrics["loss_emo"].append(stats[0])
            if adversarial:
                self._metrics["loss_adv"].append(stats[1])
            self._metrics["mixup_lambda"].append(stats[2])

        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # The eval loss is L_emo (Eq. 3 with λ = 0): the adversarial term needs gradients, which evaluation has not.
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        model_inputs = {key: value for key, value in inputs.items() if key != "labels"}
        with torch.no_grad(), self.compute_loss_context_manager():
            logits = model(**model_inputs).logits.detach()
            loss = None
            if labels is not None:
                loss = mixup_emotion_loss(logits, labels, epsilon=self.args.label_smoothing).detach()
        if prediction_loss_only:
            return loss, None, None
        return loss, logits, labels

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if eval_dataset is not None and not isinstance(eval_dataset, (dict, str)):
            eval_dataset = self._prepare_dataset(eval_dataset, self.model.config, self.args, "eval")
        elif isinstance(eval_dataset, dict):
            eval_dataset = {
                name: self._prepare_dataset(dataset, self.model.config, self.args, f"eval[{name!r}]")
                for name, dataset in eval_dataset.items()
            }
        metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        if all(f"{metric_key_prefix}_{key}" in metrics for key in EVAL_TABLE_METRICS):
            name = metric_key_prefix.removeprefix("eval_") if metric_key_prefix != "eval" else "eval"
            self.eval_results[name] = {key: float(metrics[f"{metric_key_prefix}_{key}"]) for key in EVAL_TABLE_METRICS}
        return metrics

    def eval_table(self) -> str:
        """Markdown table of the latest WA / UA / macro-F1 per evaluation set."""
        return format_emotion_eval_table(self.eval_results)

    # ------------------------------------------------------------------ checkpoints, saving and model card

    def _batches_consumed(self) -> int:
        return self.state.global_step * self.args.gradient_accumulation_steps

    def _extra_checkpoint_state(self) -> dict[str, Any] | None:
        collator = self.data_collator
        if isinstance(collator, DataCollatorForEnergyAdaptiveMixup) and self.args.dataloader_num_workers == 0:
            state = collator.plan_rng_state(self._batches_consumed())
            if state is not None:
                return {"plan": state, "batches": self._batches_consumed()}
        return None

    def _restore_extra_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.data_collator.set_plan_rng_state(state["plan"], state["batches"])

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        # The EAM plan stream is restored here, before `Trainer.train`: `_load_rng_state` runs only after the first
        # resumed batch is collated, and `_load_from_checkpoint` is skipped under DeepSpeed and FSDP.
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.args.output_dir)  # None: Trainer.train raises its own error
        if checkpoint and isinstance(self.data_collator, DataCollatorForEnergyAdaptiveMixup):
            self._load_extra_checkpoint_state(checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _model_card_eval_results(self) -> list[EvalResult]:
        metric_names = {"wa": "WA (accuracy)", "ua": "UA (mean per-class recall)", "macro_f1": "macro-F1"}
        return [
            EvalResult(
                task_type="audio-classification",
                task_name="Speech emotion recognition",
                dataset_type=name,
                dataset_name=name,
                metric_type=metric,
                metric_name=metric_names[metric],
                metric_value=round(value, 4),
            )
            for name, scores in self.eval_results.items()
            for metric, value in scores.items()
        ]

    def _model_card_fields(self) -> dict[str, Any]:
        args, config = self.args, self.model.config
        regularization = [
            ("label smoothing ε (Eq. 2)", args.label_smoothing),
            ("EAM (Algorithm 1)", f"on, p={args.eam_probability}" if args.use_eam else "off"),
            ("EAM SNR range (dB)", list(args.eam_snr_range)),
            ("adversarial ε_adv (Eq. 4)", args.adv_epsilon),
            ("adversarial weight α (Eq. 5)", args.adv_alpha),
            ("adversarial radius rule", args.adv_epsilon_scale),
            ("learning rate", args.learning_rate),
        ]
        return {
            "labels": ", ".join(f"`{config.id2label[i]}`" for i in range(config.num_labels)),
            "regularization": regularization,
            "ablation_row": ablation_row(args.label_smoothing, args.use_eam, args.adv_alpha),
            "eval_table": self.eval_table() if self.eval_results else "",
        }
