"""What the rrpo-hf trainers share on top of `transformers.Trainer`: step statistics in the logs, the model card, and
the random streams of their own that a checkpoint must hold for a resumed run to match an uninterrupted one."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import transformers
from huggingface_hub import ModelCard, ModelCardData

from ..utils.saving import atomic_write, atomic_write_text
from .model_cards import MODEL_CARD_FALLBACK_NAME, MODEL_CARD_MARKER, is_replaceable_card


logger = logging.getLogger(__name__)


class _BaseTrainer:
    """Mixin for the rrpo-hf trainers; put it first in the bases (before `MergedSaveMixin` and `Trainer`).

    A subclass sets:

    - `_tag_names` (Hub tags), `_model_card_template` (a Jinja template of `rrpo_hf.trainers.model_cards`) and
      `_pipeline_tag`, and returns the template's own variables from `_model_card_fields()`;
    - optionally `_extra_state_name`, with `_extra_checkpoint_state()` / `_restore_extra_checkpoint_state(state)`,
      for random streams the trainer keeps outside the global RNG state that `Trainer` checkpoints; the subclass
      calls `_load_extra_checkpoint_state(checkpoint)` from whichever hook precedes the first use of those streams.

    Per-step statistics appended to `self._metrics` during training are averaged over each logging window (all
    micro-batches, all processes), as TRL's trainers do; `self.eval_results` feeds the card's evaluation section.
    """

    _tag_names: list[str] = []
    _model_card_template: str
    _pipeline_tag: str
    #: Checkpoint files `<name>_<process index>.pth` hold `_extra_checkpoint_state()`; None: no such state.
    _extra_state_name: str | None = None
    #: Completes the warning when a resumed checkpoint lacks that file: what the resumed run then does differently.
    _extra_state_missing: str = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._metrics: dict[str, list[float]] = defaultdict(list)
        #: Latest evaluation scores per evaluation set, for the model card.
        self.eval_results: dict[str, dict[str, float]] = {}
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)

    # ------------------------------------------------------------------ logging

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        is_train_log = "loss" in logs and not any(key.startswith("eval_") for key in logs)
        if is_train_log and self._metrics:
            logs.update({key: sum(values) / len(values) for key, values in self._metrics.items() if values})
            self._metrics.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ extra checkpoint state

    def _extra_checkpoint_state(self) -> dict[str, Any] | None:
        """The trainer's own random state to save with each checkpoint (None: nothing this time)."""
        return None

    def _restore_extra_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Put back what `_extra_checkpoint_state` returned when the checkpoint was saved."""

    def _extra_state_path(self, checkpoint_dir: str) -> str:
        return os.path.join(checkpoint_dir, f"{self._extra_state_name}_{self.args.process_index}.pth")

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        if self._extra_state_name is None:
            return
        state = self._extra_checkpoint_state()
        if state is not None:
            torch.save(state, self._extra_state_path(output_dir))

    def _load_extra_checkpoint_state(self, checkpoint: str | None) -> None:
        if checkpoint is None or self._extra_state_name is None:
            return
        path = self._extra_state_path(checkpoint)
        if not os.path.isfile(path):
            logger.warning(f"{path} not found: {self._extra_state_missing}")
            return
        self._restore_extra_checkpoint_state(torch.load(path, weights_only=True))

    # ------------------------------------------------------------------ saving and model card

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        # Every save (final model and checkpoints) gets a card describing what it holds. A README.md that rrpo-hf
        # did not write is the user's: PEFT's adapter save would rewrite it, so it is put back as it was.
        folder = output_dir if output_dir is not None else self.args.output_dir
        readme = os.path.join(folder, "README.md")
        users_readme = None
        if self.args.should_save and not is_replaceable_card(readme):
            with open(readme, "rb") as handle:
                users_readme = handle.read()
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            if users_readme is not None:
                with open(readme, "rb") as handle:
                    if handle.read() != users_readme:
                        atomic_write(readme, lambda temporary: Path(temporary).write_bytes(users_readme))
            self._write_model_card(folder, keep_readme=users_readme is not None)

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | list[str] | None = None,
        tags: str | list[str] | None = None,
        **kwargs,
    ) -> None:
        """Write ``README.md`` to ``args.output_dir``; called by :meth:`push_to_hub`.

        :meth:`save_model` and checkpoints write the same card next to the weights.
        """
        if not self.is_world_process_zero():
            return
        self._write_model_card(self.args.output_dir, model_name=model_name, dataset_name=dataset_name, tags=tags)

    def _model_card_fields(self) -> dict[str, Any]:
        """Variables of `_model_card_template` beyond the common ones (names, versions)."""
        return {}

    def _model_card_tags(self) -> list[str]:
        """Tags of this run beyond `_tag_names`."""
        return []

    def _model_card_eval_results(self) -> list | None:
        """`huggingface_hub.EvalResult`s for the card's metadata (None: none)."""
        return None

    def _write_model_card(
        self, output_dir, model_name=None, dataset_name=None, tags=None, keep_readme: bool | None = None
    ) -> None:
        """Render the card into `output_dir`: `README.md`, or `MODEL_CARD.md` when `keep_readme` (default: when the
        README there is not one rrpo-hf wrote)."""
        from .. import __version__ as rrpo_version

        if model_name is None:
            model_name = self.args.hub_model_id.split("/")[-1] if self.args.hub_model_id else Path(output_dir).name
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        all_tags = list(dict.fromkeys(["generated_from_trainer", *self._tag_names, *self._model_card_tags(), *tags]))
        base_model = self._base_model_id
        card_data = ModelCardData(
            model_name=model_name,
            # A local folder is no Hub id: the card metadata would link to a repository that does not exist.
            base_model=base_model if base_model and not os.path.isdir(base_model) else None,
            datasets=dataset_name,
            library_name="transformers",
            pipeline_tag=self._pipeline_tag,
            tags=all_tags,
            eval_results=self._model_card_eval_results() or None,
        )
        card = ModelCard.from_template(
            card_data,
            template_str=self._model_card_template,
            model_name=model_name,
            model_id=self.hub_model_id or self.args.hub_model_id or model_name,
            base_model=base_model,
            rrpo_version=rrpo_version,
            transformers_version=transformers.__version__,
            pytorch_version=torch.__version__,
            **self._model_card_fields(),
        )
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, "README.md")
        if keep_readme is None:
            keep_readme = not is_replaceable_card(path)
        if keep_readme:
            # A README the user wrote (or another tool did) stays; the card is written next to it instead.
            path = os.path.join(output_dir, MODEL_CARD_FALLBACK_NAME)
            if not getattr(self, "_warned_kept_readme", False):
                logger.warning(
                    f"{output_dir}/README.md was not written by rrpo-hf: kept as it is; the model card goes to "
                    f"{MODEL_CARD_FALLBACK_NAME} (push_to_hub uploads your README)."
                )
                self._warned_kept_readme = True
        # Atomic: a crash mid-write never leaves a truncated card next to a good checkpoint.
        atomic_write_text(path, f"{card}\n{MODEL_CARD_MARKER}\n")


__all__ = ["_BaseTrainer"]
