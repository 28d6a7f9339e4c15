"""Progress of the study inside each training stage: steps and epochs as they pass, one line per quarter."""

from __future__ import annotations

import os
import time

from transformers.trainer_callback import TrainerCallback


class StageProgress(TrainerCallback):
    """One line per quarter of a stage's steps, `[seed0] sft: step 300/1200, epoch 2.0/8, 41 s`: the study's
    progress inside each stage (the stage is named by its output folder, `<workdir>/seed<N>/<stage>`)."""

    def __init__(self, output_dir: str, parts: int = 4):
        path = os.path.normpath(output_dir)
        self.label = f"[{os.path.basename(os.path.dirname(path))}] {os.path.basename(path)}"
        self.parts = parts
        self._next = 1
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps > 0 and state.global_step * self.parts >= self._next * state.max_steps:
            self._next = state.global_step * self.parts // state.max_steps + 1
            epochs = f", epoch {state.epoch:.1f}/{state.num_train_epochs:g}" if state.num_train_epochs > 1 else ""
            print(
                f"{self.label}: step {state.global_step}/{state.max_steps}{epochs}, "
                f"{time.perf_counter() - self._start:.0f} s",
                flush=True,
            )


__all__ = ["StageProgress"]
