"""Training-argument defaults shared by the rrpo-hf trainers' configs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from transformers import TrainingArguments


@dataclass
class _BaseConfig(TrainingArguments):
    """`TrainingArguments` that make a multi-process launch on a machine without CUDA train as one job.

    Without gloo every rank of a CPU launch (`accelerate launch` / `torchrun` on CPUs) silently trains alone. The
    backend is only set under a launcher (`WORLD_SIZE` > 1): a backend without one makes accelerate expect a
    process group that never comes.
    """

    def __post_init__(self):
        launched_processes = int(os.environ.get("WORLD_SIZE", "1"))
        if launched_processes > 1 and not torch.cuda.is_available():
            # No GPU to run on: without use_cpu accelerate would set up no process group (DistributedType.NO).
            self.use_cpu = True
        if self.ddp_backend is None and launched_processes > 1 and (self.use_cpu or not torch.cuda.is_available()):
            self.ddp_backend = "gloo"
        super().__post_init__()


__all__ = ["_BaseConfig"]
