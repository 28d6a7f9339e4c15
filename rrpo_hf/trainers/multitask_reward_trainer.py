"""Trainer for the multi-task token reward model (DiffRO, arXiv 2507.05911): one RobustSER encoder, a head per task.

One training step, on a batch with the EAM plan of the collator (when the emotion head is trained and `use_eam`):

1. ``out = model(**batch)``: the emotion head reads the EAM-mixed features, the ASR and quality heads an un-mixed pass
   of the same batch (the model runs both as one encoder pass);
2. emotion: ``L_ser = L_emo + α·L_adv``, exactly [`RobustRewardTrainer`]'s step (Eq. 2-5: label smoothing, the EAM
   partner labels weighted by λ, FGM on h' through the emotion head only);
3. ASR: ``L_ASR = mean_b(-log P_CTC(text_b | tokens_b) / |text_b|)`` on the un-mixed pass;
4. quality: ``L_quality`` = cross-entropy of the quality class on the un-mixed pass;
5. ``L = L_ser + w_asr·L_ASR + w_quality·L_quality``.

A mixed sample is thus used twice: mixed, as an emotion sample with the partner's label at weight λ (RRPO's
regularizer), and un-mixed, with its own transcript and quality label, which the mixed speech would no longer match.
Adversarial training perturbs h' for the emotion loss only; the ASR and quality heads see clean h'.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, Value
from huggingface_hub import EvalResult
from transformers import AutoConfig, AutoModel, PreTrainedModel, TrainerCallback, set_seed
from transformers.trainer_utils import EvalPrediction

from ..data.collators import DataCollatorForEnergyAdaptiveMixup
from ..data.validation import describe_row
from ..evaluation.metrics import compute_emotion_metrics, format_emotion_eval_table
from ..models.robust_ser import RobustMultiTaskRMConfig, RobustSERConfig, RobustSERForMultiTaskReward
from ..models.robust_ser.configuration_robust_multitask import MULTITASK_TASKS
from ..models.robust_ser.modeling_robust_multitask import encode_symbol_texts
from ..ops import edit_distance, mixup_emotion_loss
from ..ops.ctc import ctc_greedy_decode
from .multitask_reward_config import MultiTaskRewardConfig
from .robust_reward_trainer import SPEECH_TOKENS_COLUMN, RobustRewardTrainer, ablation_row


logger = logging.getLogger(__name__)

#: Parameters of each head, by module-name prefix (the encoder is shared and always trained).
HEAD_PREFIXES = {
    "emotion": ("pooler.", "classifier."),
    "asr": ("asr_head.",),
    "quality": ("quality_pooler.", "quality_head."),
}
_TASK_INPUT_KEYS = ("asr_targets", "asr_target_lengths", "quality_labels")


MULTITASK_REWARD_MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A multi-task token reward model over discrete speech tokens, as in
[DiffRO](https://huggingface.co/papers/2507.05911): one speech-token encoder with a head per task, trained with
rrpo-hf{% if base_model %} from `{{ base_model }}`{% endif %}. The emotion head is trained with the hybrid
regularization of [RRPO](https://huggingface.co/papers/2512.04552).

Heads: {{ heads }}. Trained here: {{ trained }}.

{{ head_details }}

## Training

| setting | value |
|---|---|
{% for name, value in settings %}| {{ name }} | {{ value }} |
{% endfor %}
Emotion ablation row: **{{ ablation_row }}**.

## Evaluation

{% if eval_table %}{{ eval_table }}{% else %}No evaluation was run.{% endif %}

## Usage

```python
from transformers import AutoModel

model = AutoModel.from_pretrained("{{ model_id }}", trust_remote_code=True)
out = model(input_ids=speech_tokens, attention_mask=attention_mask)  # S3 speech tokens (25 Hz)
# out.logits (emotion), out.asr_logits (CTC, blank = 0), out.quality_logits; model.decode_asr(out.asr_logits, mask)
```

### Framework versions

- rrpo-hf: {{ rrpo_version }}
- Transformers: {{ transformers_version }}
- PyTorch: {{ pytorch_version }}
"""


@dataclass
class DataCollatorForMultiTaskReward(DataCollatorForEnergyAdaptiveMixup):
    """:class:`DataCollatorForEnergyAdaptiveMixup` plus the ASR and quality targets of the multi-task reward model.

    Adds ``asr_targets`` ``(B, U_max)`` (right-padded with 0) and ``asr_target_lengths`` ``(B,)`` from
    ``text_column`` when ``asr_labels`` is set, and ``quality_labels`` ``(B,)`` from ``quality_column`` (class ids,
    as :class:`MultiTaskRewardTrainer` maps them) when set. ``label_column=None`` leaves out the emotion labels;
    ``eam_probability=0`` never mixes (evaluation, or no emotion head).
    """

    asr_labels: Sequence[str] | None = field(
        default=None, metadata={"help": "The model's ASR symbols (CTC class i + 1); None: no ASR targets."}
    )
    text_column: str = field(default="text", metadata={"help": "Column with the space-separated transcript."})
    quality_column: str | None = field(
        default=None, metadata={"help": "Column with quality class ids; None: no quality labels."}
    )
    num_quality_labels: int | None = field(default=None, metadata={"help": "Number of quality classes."})

    def __post_init__(self):
        super().__post_init__()
        self._symbol_to_id = {symbol: i + 1 for i, symbol in enumerate(self.asr_labels or ())}

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        if self.asr_labels is not None:
            texts = []
            for index, row in enumerate(features):
                if self.text_column not in row:
                    raise KeyError(
                        f"{describe_row(row, index)} has no `{self.text_column}` column (the ASR transcript); it has "
                        f"{sorted(row)}. Set `text_column` or rename the column."
                    )
                texts.append(row[self.text_column])
            try:
                batch["asr_targets"], batch["asr_target_lengths"] = encode_symbol_texts(
                    texts, self._symbol_to_id, list(self.asr_labels)
                )
            except (ValueError, TypeError):
                # Name the dataset row: re-encode one text at a time up to the first that fails.
                for index, text in enumerate(texts):
                    try:
                        encode_symbol_texts([text], self._symbol_to_id, list(self.asr_labels))
                    except (ValueError, TypeError) as error:
                        message = str(error).removeprefix("Text 0 ")
                        raise type(error)(f"{describe_row(features[index], index)}: text {message}") from None
                raise
        if self.quality_column is not None:
            labels = []
            for index, row in enumerate(features):
                value = row.get(self.quality_column) if isinstance(row, Mapping) else None
                if isinstance(value, bool) or not hasattr(value, "__index__"):
                    raise TypeError(
                        f"{describe_row(row, index)} has quality {value!r}; the collator needs class ids (the "
                        "MultiTaskRewardTrainer maps names onto the model's quality_labels before training)."
                    )
                if self.num_quality_labels is not None and not 0 <= int(value) < self.num_quality_labels:
                    raise ValueError(
                        f"{describe_row(row, index)} has quality class id {int(value)}, outside "
                        f"[0, {self.num_quality_labels})."
                    )
                labels.append(int(value))
            batch["quality_labels"] = torch.tensor(labels, dtype=torch.long)
        return batch


class MultiTaskRewardTrainer(RobustRewardTrainer):
    """Trainer for a [`~rrpo_hf.models.robust_ser.RobustSERForMultiTaskReward`]: emotion (LS + EAM + Adv, as
    [`RobustRewardTrainer`]), ASR (CTC on the transcripts) and quality (cross-entropy on the quality classes).

    Args:
        model (`str`, [`~rrpo_hf.models.robust_ser.RobustMultiTaskRMConfig`] or [`~transformers.PreTrainedModel`]):
            A multi-task model, a config to build one from scratch, or a path / Hub id of a multi-task checkpoint
            (loaded with `AutoModel` and `args.model_init_kwargs`). To start from a trained RobustSER emotion model,
            pass `RobustSERForMultiTaskReward.from_robust_ser(path, tasks=..., asr_labels=...)`.
        args ([`MultiTaskRewardConfig`], *optional*):
            Training arguments; `args.tasks` picks the heads to train (default: all the model has; the others are
            frozen).
        data_collator (*optional*):
            Training collator; defaults to [`DataCollatorForMultiTaskReward`], which draws EAM plans when the emotion
            head is trained and `args.use_eam`. Evaluation always uses it without mixing.
        train_dataset ([`~datasets.Dataset`]):
            Rows with `speech_tokens` and, per trained task, `args.label_column` (emotion), `args.text_column`
            (space-separated ASR symbols) and `args.quality_column` (quality class). Checked before the first step.
        eval_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`, *optional*):
            One or several evaluation sets; each reports WA / UA / macro-F1 (emotion), `asr_cer` (greedy CTC
            decoding) and `quality_accuracy`, for the trained heads.
        processing_class, compute_metrics, callbacks, optimizers, preprocess_logits_for_metrics:
            As in [`RobustRewardTrainer`]. `compute_metrics` receives dicts: predictions `emotion_logits`,
            `quality_logits`, `asr_edits`; labels `emotion`, `quality`, `asr_reference_lengths`.
    """

    _tag_names = [
        "rrpo",
        "diffro",
        "reward-model",
        "multi-task",
        "speech-emotion-recognition",
        "asr",
        "speech-quality",
    ]
    _name = "MultiTaskReward"
    _model_card_template = MULTITASK_REWARD_MODEL_CARD_TEMPLATE

    def __init__(
        self,
        model: str | RobustMultiTaskRMConfig | PreTrainedModel,
        args: MultiTaskRewardConfig | None = None,
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
            args = MultiTaskRewardConfig(output_dir="outputs/multitask_reward_model")
        elif not isinstance(args, MultiTaskRewardConfig):
            raise TypeError(
                f"`args` must be a MultiTaskRewardConfig (it carries the tasks and their loss weights), got "
                f"{type(args).__name__}."
            )
        #: Latest ASR CER / quality accuracy per evaluation set (emotion scores stay in `eval_results`).
        self.task_eval_results: dict[str, dict[str, float]] = {}
        super().__init__(
            model=model,
            args=args,
            # Placeholder: the base would build its emotion-only collator; ours is set below, once the model is known.
            data_collator=data_collator if data_collator is not None else (lambda features: features),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics if compute_metrics is not None else self._compute_task_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        config = self.model.config
        self.tasks = self._trained_tasks(config, args)
        config.asr_loss_weight = args.asr_loss_weight
        config.quality_loss_weight = args.quality_loss_weight
        self._freeze_untrained_heads()

        mix = args.use_eam and "emotion" in self.tasks
        if args.use_eam and not mix:
            logger.info("EAM regularizes the emotion head only, which is not trained here: no batch is mixed.")
        collator_kwargs = dict(
            pad_token_id=config.pad_token_id,
            label_column=args.label_column if "emotion" in self.tasks else None,
            max_length=args.max_length or getattr(config, "max_position_embeddings", None),
            truncation=args.max_length is not None,
            vocab_size=config.vocab_size,
            label2id=dict(config.label2id),
            asr_labels=list(config.asr_labels) if "asr" in self.tasks else None,
            text_column=args.text_column,
            quality_column=args.quality_column if "quality" in self.tasks else None,
            num_quality_labels=config.num_quality_labels,
            snr_range_db=tuple(args.eam_snr_range),
            seed=args.seed,
        )
        self.eval_data_collator = DataCollatorForMultiTaskReward(**collator_kwargs, eam_probability=0.0)
        if data_collator is None:
            self.data_collator = DataCollatorForMultiTaskReward(
                **collator_kwargs, eam_probability=args.eam_probability if mix else 0.0
            )

    # ------------------------------------------------------------------ set-up

    @staticmethod
    def _create_model(model, args: MultiTaskRewardConfig) -> PreTrainedModel:
        if isinstance(model, RobustMultiTaskRMConfig):
            set_seed(args.seed)
            return RobustSERForMultiTaskReward(model)
        if isinstance(model, RobustSERConfig):
            raise TypeError(
                "A RobustSERConfig builds the emotion-only model (RobustRewardTrainer). For the multi-task model pass "
                "RobustMultiTaskRMConfig(**<its fields>, tasks=[...], asr_labels=[...])."
            )
        if isinstance(model, str):
            model_init_kwargs = dict(args.model_init_kwargs or {})
            config = AutoConfig.from_pretrained(model, trust_remote_code=model_init_kwargs.get("trust_remote_code"))
            if config.model_type == RobustSERConfig.model_type:
                raise ValueError(
                    f"{model!r} is a RobustSER emotion model, which has no ASR or quality head. Start from it with "
                    f"`RobustSERForMultiTaskReward.from_robust_ser({model!r}, tasks=[...], asr_labels=[...])` and "
                    "pass that model (train_rm.py does this for --model_name_or_path with --tasks)."
                )
            return AutoModel.from_pretrained(model, **model_init_kwargs)
        if isinstance(model, PreTrainedModel):
            if args.model_init_kwargs:
                raise ValueError(
                    "`model_init_kwargs` only applies when `model` is a path or Hub id; the model passed is already "
                    "instantiated. Drop `model_init_kwargs` or pass the model's path."
                )
            if getattr(model.config, "tasks", None) is None or not hasattr(model, "encode_asr_targets"):
                raise TypeError(
                    f"{type(model).__name__} is not a multi-task reward model (its config has no `tasks`). Train a "
                    "RobustSERForAudioClassification with RobustRewardTrainer, or convert it with "
                    "RobustSERForMultiTaskReward.from_robust_ser(model, tasks=[...], asr_labels=[...])."
                )
            return model
        raise TypeError(
            "`model` must be a path/Hub id, a RobustMultiTaskRMConfig or a PreTrainedModel, got "
            f"{type(model).__name__}."
        )

    @staticmethod
    def _trained_tasks(config, args: MultiTaskRewardConfig) -> list[str]:
        heads = list(config.tasks)
        requested = heads if args.tasks is None else list(args.tasks)
        missing = [task for task in requested if task not in heads]
        if missing:
            raise ValueError(
                f"The reward model has no {missing} head(s) (tasks={heads}); drop them from --tasks, or build the "
                f"model with tasks {sorted(set(heads) | set(missing), key=MULTITASK_TASKS.index)} "
                "(RobustMultiTaskRMConfig(tasks=...), or from_robust_ser for an emotion checkpoint)."
            )
        return [task for task in MULTITASK_TASKS if task in requested]

    def _freeze_untrained_heads(self) -> None:
        # A head that gets no loss would get no gradient; under DDP that is an error, elsewhere wasted optimizer state.
        frozen = tuple(
            prefix for task, prefixes in HEAD_PREFIXES.items() if task not in self.tasks for prefix in prefixes
        )
        for name, parameter in self.model.named_parameters():
            if name.startswith(frozen):
                parameter.requires_grad_(False)

    # ------------------------------------------------------------------ datasets

    def _prepare_dataset(self, dataset, config, args: MultiTaskRewardConfig, split: str):
        """Check every column of every trained task before training starts; map emotion / quality names onto ids."""
        if not isinstance(dataset, Dataset):
            logger.warning(
                f"The {split} dataset is a {type(dataset).__name__}, not a datasets.Dataset: not validated."
            )
            return dataset
        tasks = self._trained_tasks(config, args)
        needed = {SPEECH_TOKENS_COLUMN: "list of speech token ids"}
        if "emotion" in tasks:
            needed[args.label_column] = "the emotion (`label_column`)"
        if "asr" in tasks:
            needed[args.text_column] = "the transcript as space-separated ASR symbols (`text_column`)"
        if "quality" in tasks:
            needed[args.quality_column] = "the quality class (`quality_column`)"
        missing = [column for column in needed if column not in dataset.column_names]
        if missing:
            described = "; ".join(f"`{column}`: {needed[column]}" for column in missing)
            raise ValueError(
                f"The {split} dataset lacks the column(s) {missing} that the tasks {tasks} need ({described}); it has "
                f"{dataset.column_names}. Rename with `dataset.rename_column(old, new)`, point the config's "
                "*_column at them, or drop the task from --tasks."
            )
        if len(dataset) == 0:
            raise ValueError(f"The {split} dataset is empty.")
        if "emotion" in tasks:
            dataset = self._map_labels(dataset, config, args.label_column, split)
        self._check_speech_tokens(dataset, config, args, split)
        if "asr" in tasks:
            self._check_transcripts(dataset, config, args, split)
        if "quality" in tasks:
            dataset = self._map_quality(dataset, config, args.quality_column, split)
        return dataset

    @staticmethod
    def _check_transcripts(dataset: Dataset, config, args: MultiTaskRewardConfig, split: str) -> None:
        import pyarrow.compute as pc

        column = args.text_column
        feature = dataset.features[column]
        if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
            raise TypeError(
                f"The {split} dataset's `{column}` column has type {feature}; the ASR head needs strings of "
                "space-separated symbols."
            )
        symbols_known = set(config.asr_labels)
        texts = dataset[column]
        lengths = pc.list_value_length(
            dataset.select_columns([SPEECH_TOKENS_COLUMN]).with_format("arrow")[:][SPEECH_TOKENS_COLUMN]
        ).to_numpy(zero_copy_only=False)
        for row, (text, num_tokens) in enumerate(zip(texts, lengths)):
            where = f"Row {row} of the {split} dataset"
            symbols = text.split() if isinstance(text, str) else []
            if not symbols:
                raise ValueError(
                    f"{where} has an empty `{column}` ({text!r}); the ASR head needs a transcript. Filter such rows: "
                    f"`dataset.filter(lambda row: bool(row['{column}'] and row['{column}'].strip()))`."
                )
            unknown = next((symbol for symbol in symbols if symbol not in symbols_known), None)
            if unknown is not None:
                shown = list(config.asr_labels)[:40]
                raise ValueError(
                    f"{where} has the symbol {unknown!r} in `{column}` ({text!r}), which is not in the model's ASR "
                    f"vocabulary (asr_labels: {shown}{' ...' if len(config.asr_labels) > 40 else ''}). Build the "
                    "model with asr_labels covering every symbol of the data (train_rm.py reads them from the "
                    "training texts), or map / filter such rows."
                )
            if args.max_length is not None and num_tokens > args.max_length:
                raise ValueError(
                    f"{where} has {int(num_tokens)} speech tokens, more than max_length={args.max_length}: truncating "
                    "them would cut speech its transcript still describes, a wrong ASR target. Filter rows longer "
                    f"than {args.max_length} tokens, or raise --max_length."
                )
            needed = len(symbols) + sum(a == b for a, b in zip(symbols, symbols[1:]))
            if num_tokens < needed:
                raise ValueError(
                    f"{where} has {int(num_tokens)} speech tokens but its transcript needs at least {needed} frames "
                    "(one per symbol, plus a blank between repeated symbols), so no CTC alignment exists. Check that "
                    f"`{column}` belongs to this speech, or filter the row."
                )

    @staticmethod
    def _map_quality(dataset: Dataset, config, column: str, split: str) -> Dataset:
        names = list(config.quality_labels)
        feature = dataset.features[column]
        if isinstance(feature, ClassLabel) or (isinstance(feature, Value) and feature.dtype == "string"):
            values = feature.names if isinstance(feature, ClassLabel) else sorted(set(dataset[column]), key=str)
            unknown = sorted({str(value) for value in values if str(value) not in names})
            if unknown:
                raise ValueError(
                    f"The {split} dataset's `{column}` has quality class(es) {unknown} that the model does not have "
                    f"(quality_labels: {names}). Map them onto these names, or build the model with matching "
                    "quality_labels."
                )
            lookup = {name: i for i, name in enumerate(names)}
            if isinstance(feature, ClassLabel):
                old_to_new = [lookup[name] for name in feature.names]
                if old_to_new == list(range(len(names))):
                    return dataset
                remap = lambda batch: {column: [old_to_new[i] for i in batch[column]]}  # noqa: E731
            else:
                remap = lambda batch: {column: [lookup[value] for value in batch[column]]}  # noqa: E731
            features = dataset.features.copy()
            features[column] = ClassLabel(names=names)
            return dataset.map(remap, batched=True, features=features, desc=f"Mapping {split} quality classes to ids")
        if isinstance(feature, Value) and feature.dtype.startswith(("int", "uint")):
            values = np.asarray(dataset.select_columns([column]).with_format("numpy")[:][column])
            bad = np.flatnonzero((values < 0) | (values >= len(names)))
            if bad.size:
                raise ValueError(
                    f"Row {int(bad[0])} of the {split} dataset has `{column}` {int(values[bad[0]])}, outside the "
                    f"class ids [0, {len(names)}) (quality_labels: {names}). Integers are class ids; for MOS levels "
                    f"{names[0]}..{names[-1]} use their names: `dataset.cast_column('{column}', "
                    f"ClassLabel(names={names}))` after `dataset.map(lambda r: {{'{column}': str(r['{column}'])}})`."
                )
            return dataset
        raise TypeError(
            f"The {split} dataset's `{column}` column has type {feature}; use a ClassLabel, the names of the model's "
            f"quality_labels {names}, or class ids. Raw scores (e.g. MOS 3.7) must be rounded into classes first."
        )

    # ------------------------------------------------------------------ loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """``L = L_ser + w_asr·L_ASR + w_quality·L_quality``; logs ``loss_emo``/``loss_adv`` (base), ``loss_asr`` and
        ``loss_quality``."""
        base_inputs = {key: value for key, value in inputs.items() if key not in _TASK_INPUT_KEYS}
        if "emotion" in self.tasks:
            # RobustRewardTrainer's step, unchanged: LS, the EAM partner labels, FGM through the emotion head.
            loss, outputs = super().compute_loss(model, base_inputs, return_outputs=True)
        else:
            outputs = model(**{key: value for key, value in base_inputs.items() if key != "labels"})
            loss = None
        unwrapped = self.accelerator.unwrap_model(model)
        stats = {}
        if "asr" in self.tasks:
            loss_asr = unwrapped.asr_ctc_loss(
                outputs.asr_logits, outputs.attention_mask, inputs["asr_targets"], inputs["asr_target_lengths"]
            )
            stats["loss_asr"] = loss_asr
            loss = (
                self.args.asr_loss_weight * loss_asr if loss is None else loss + self.args.asr_loss_weight * loss_asr
            )
        if "quality" in self.tasks:
            loss_quality = F.cross_entropy(outputs.quality_logits.float(), inputs["quality_labels"])
            stats["loss_quality"] = loss_quality
            weighted = self.args.quality_loss_weight * loss_quality
            loss = weighted if loss is None else loss + weighted
        if model.training and stats:
            with torch.no_grad():
                values = torch.stack([value.detach().float() for value in stats.values()])[None]
                values = self.accelerator.gather_for_metrics(values).mean(dim=0).tolist()
            for name, value in zip(stats, values):
                self._metrics[name].append(value)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # The eval loss has no adversarial term (it needs gradients); the heads read un-mixed speech.
        inputs = self._prepare_inputs(inputs)
        model_inputs = {key: inputs[key] for key in ("input_ids", "attention_mask")}
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(**model_inputs)
            predictions, labels, terms = {}, {}, []
            if "emotion" in self.tasks:
                predictions["emotion_logits"] = outputs.logits.detach()
                labels["emotion"] = inputs["labels"]
                terms.append(mixup_emotion_loss(outputs.logits, inputs["labels"], epsilon=self.args.label_smoothing))
            if "asr" in self.tasks:
                unwrapped = self.accelerator.unwrap_model(model)
                targets, target_lengths = inputs["asr_targets"], inputs["asr_target_lengths"]
                terms.append(
                    self.args.asr_loss_weight
                    * unwrapped.asr_ctc_loss(outputs.asr_logits, outputs.attention_mask, targets, target_lengths)
                )
                decoded = ctc_greedy_decode(outputs.asr_logits, outputs.attention_mask.sum(dim=1))
                references = [row[:length].tolist() for row, length in zip(targets.cpu(), target_lengths.cpu())]
                edits = [edit_distance(hyp, ref) for hyp, ref in zip(decoded, references)]
                predictions["asr_edits"] = torch.tensor(edits, device=target_lengths.device)
                labels["asr_reference_lengths"] = target_lengths
            if "quality" in self.tasks:
                predictions["quality_logits"] = outputs.quality_logits.detach()
                labels["quality"] = inputs["quality_labels"]
                terms.append(
                    self.args.quality_loss_weight
                    * F.cross_entropy(outputs.quality_logits.float(), inputs["quality_labels"])
                )
            loss = sum(terms[1:], terms[0]).detach()
        if prediction_loss_only:
            return loss, None, None
        return loss, predictions, labels

    # ------------------------------------------------------------------ evaluation

    def _compute_task_metrics(self, eval_prediction: EvalPrediction) -> dict[str, float]:
        """WA / UA / macro-F1 (emotion), ``asr_cer`` (edits / reference symbols) and ``quality_accuracy``."""
        predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
        metrics: dict[str, float] = {}
        if "emotion_logits" in predictions:
            metrics.update(
                compute_emotion_metrics(
                    EvalPrediction(predictions=predictions["emotion_logits"], label_ids=labels["emotion"]),
                    label_names=self.label_names_in_order,
                )
            )
        if "asr_edits" in predictions:
            lengths = np.asarray(labels["asr_reference_lengths"]).reshape(-1)
            edits = np.asarray(predictions["asr_edits"]).reshape(-1)
            keep = lengths > 0  # the Trainer pads uneven final batches with -100
            metrics["asr_cer"] = float(edits[keep].sum() / max(lengths[keep].sum(), 1))
        if "quality_logits" in predictions:
            references = np.asarray(labels["quality"]).reshape(-1)
            predicted = np.asarray(predictions["quality_logits"]).argmax(axis=-1).reshape(-1)
            keep = references >= 0
            metrics["quality_accuracy"] = float((predicted[keep] == references[keep]).mean())
        return metrics

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        scores = {
            key: float(metrics[f"{metric_key_prefix}_{key}"])
            for key in ("asr_cer", "quality_accuracy")
            if f"{metric_key_prefix}_{key}" in metrics
        }
        if scores:
            name = metric_key_prefix.removeprefix("eval_") if metric_key_prefix != "eval" else "eval"
            self.task_eval_results[name] = scores
        return metrics

    def eval_table(self) -> str:
        """Markdown table of the latest scores per evaluation set: WA / UA / F1 (emotion), CER (ASR), quality acc."""
        names = list(dict.fromkeys([*self.eval_results, *self.task_eval_results]))
        if not names:
            return ""
        columns = []
        if self.eval_results:
            columns += [("wa", "WA (%)"), ("ua", "UA (%)"), ("macro_f1", "F1 (%)")]
        if any("asr_cer" in scores for scores in self.task_eval_results.values()):
            columns.append(("asr_cer", "ASR CER (%)"))
        if any("quality_accuracy" in scores for scores in self.task_eval_results.values()):
            columns.append(("quality_accuracy", "quality acc. (%)"))
        if [key for key, _ in columns] == ["wa", "ua", "macro_f1"]:
            return format_emotion_eval_table(self.eval_results)
        lines = ["| eval set | " + " | ".join(title for _, title in columns) + " |"]
        lines.append("|---|" + "---:|" * len(columns))
        for name in names:
            scores = {**self.eval_results.get(name, {}), **self.task_eval_results.get(name, {})}
            cells = [f"{100 * scores[key]:.1f}" if key in scores else "-" for key, _ in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    # ------------------------------------------------------------------ model card

    def _model_card_eval_results(self) -> list[EvalResult]:
        results = super()._model_card_eval_results()
        tasks = {
            "asr_cer": ("automatic-speech-recognition", "Speech recognition (CTC head)", "cer", "CER"),
            "quality_accuracy": ("audio-classification", "Speech quality (MOS class)", "accuracy", "accuracy"),
        }
        for name, scores in self.task_eval_results.items():
            for key, value in scores.items():
                task_type, task_name, metric_type, metric_name = tasks[key]
                results.append(
                    EvalResult(
                        task_type=task_type,
                        task_name=task_name,
                        dataset_type=name,
                        dataset_name=name,
                        metric_type=metric_type,
                        metric_name=metric_name,
                        metric_value=round(value, 4),
                    )
                )
        return results

    def _model_card_fields(self) -> dict[str, Any]:
        args, config = self.args, self.model.config
        details = []
        if "emotion" in config.tasks:
            labels = ", ".join(f"`{config.id2label[i]}`" for i in range(config.num_labels))
            details.append(f"- emotion: {labels}")
        if "asr" in config.tasks:
            details.append(
                f"- asr: CTC over {len(config.asr_labels)} symbols + blank (class 0): "
                + ", ".join(f"`{symbol}`" for symbol in config.asr_labels[:60])
                + (" ..." if len(config.asr_labels) > 60 else "")
            )
        if "quality" in config.tasks:
            details.append(
                "- quality: " + ", ".join(f"`{label}`" for label in config.quality_labels) + " (worst first)"
            )
        settings = [
            ("tasks trained", ", ".join(self.tasks)),
            ("ASR loss weight", args.asr_loss_weight if "asr" in self.tasks else "-"),
            ("quality loss weight", args.quality_loss_weight if "quality" in self.tasks else "-"),
            ("label smoothing ε (Eq. 2, emotion)", args.label_smoothing),
            (
                "EAM (Algorithm 1, emotion head)",
                f"on, p={args.eam_probability}" if args.use_eam and "emotion" in self.tasks else "off",
            ),
            ("adversarial ε_adv / α (Eq. 4-5, emotion head)", f"{args.adv_epsilon} / {args.adv_alpha}"),
            ("learning rate", args.learning_rate),
        ]
        return {
            "heads": ", ".join(f"`{task}`" for task in config.tasks),
            "trained": ", ".join(f"`{task}`" for task in self.tasks),
            "head_details": "\n".join(details),
            "settings": settings,
            "ablation_row": ablation_row(args.label_smoothing, args.use_eam, args.adv_alpha)
            if "emotion" in self.tasks
            else "n/a (no emotion head trained)",
            "eval_table": self.eval_table(),
        }


__all__ = ["DataCollatorForMultiTaskReward", "MultiTaskRewardTrainer"]
