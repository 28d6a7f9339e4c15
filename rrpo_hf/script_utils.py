"""Helpers of the example scripts: argument parsing with a toy recipe, and `--resume_from_checkpoint true`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from trl import TrlParser


_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0", "")


class ScriptParser(TrlParser):
    """A `TrlParser` whose defaults are the library's, plus a toy recipe for the argument-free run.

    A script run without `--config` and without `--dataset_name` (the built-in testbed) reads `toy_config` first,
    as if `--config toy_config` had been given; flags still override it. Any other run gets the dataclasses'
    own defaults for every key its recipe and flags do not set -- never the toy's (60 steps, CPU, toy lr).
    """

    def __init__(self, dataclass_types, toy_config: str | os.PathLike | None = None, **kwargs):
        super().__init__(dataclass_types, **kwargs)
        self.toy_config = None if toy_config is None else os.fspath(toy_config)

    @staticmethod
    def is_toy_run(args: Iterable[str]) -> bool:
        args = list(args)
        given = {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}
        return "--config" not in given and "--dataset_name" not in given

    def parse_args_and_config(self, args: Iterable[str] | None = None, **kwargs):
        args = list(sys.argv[1:] if args is None else args)
        if self.toy_config is not None and self.is_toy_run(args):
            args = ["--config", self.toy_config, *args]
        return super().parse_args_and_config(args, **kwargs)


def resolve_resume_from_checkpoint(value: str | bool | None, output_dir: str) -> str | None:
    """`--resume_from_checkpoint` as `Trainer.train` needs it: a checkpoint folder or `None`.

    `true` means the latest `checkpoint-N` in `output_dir` (as in TRL's scripts), `false` or empty means a fresh
    run, anything else is a checkpoint path, which must exist.
    """
    from transformers.trainer_utils import get_last_checkpoint

    if value is None or value is False:
        return None
    text = str(value).strip()
    if text.lower() in _FALSE:
        return None
    if value is True or text.lower() in _TRUE:
        latest = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if latest is None:
            raise ValueError(
                f"--resume_from_checkpoint true: no checkpoint-N folder in output_dir {output_dir!r}. Save "
                "checkpoints (--save_strategy steps --save_steps N), point --output_dir at the interrupted run, or "
                "pass a checkpoint path."
            )
        return latest
    if not os.path.isdir(text):
        raise ValueError(
            f"--resume_from_checkpoint {text!r} is not a folder. Pass a `checkpoint-N` folder of an earlier run, or "
            "`true` for the latest checkpoint in --output_dir."
        )
    return text


__all__ = ["ScriptParser", "resolve_resume_from_checkpoint"]
