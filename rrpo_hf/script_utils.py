"""Helpers of the example scripts: argument parsing with a toy recipe, `--resume_from_checkpoint true`, and a clean
end of a distributed run."""

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


def end_distributed_run() -> None:
    """Wait for every process, then tear the process group down; a no-op without one.

    Every launched script calls this last. Without it a rank that is done first (under ZeRO-3 every rank but the
    main one, while the main one still writes the gathered weights) exits with the process group alive: gloo's
    threads are destroyed mid-use, the process aborts (`terminate called without an active exception`) and the
    launcher kills the run, so a finished, saved run reports failure.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _requested_preset(args: list[str], default: str) -> str:
    """The study preset `args` ask for: `--preset`, else the `preset` key of the `--config` recipe, else `default`."""
    import yaml

    def value_of(flag: str) -> str | None:
        found = None
        for i, arg in enumerate(args):
            if arg == flag and i + 1 < len(args):
                found = args[i + 1]
            elif arg.startswith(flag + "="):
                found = arg.split("=", 1)[1]
        return found

    preset = value_of("--preset")
    if preset is None and (recipe := value_of("--config")) is not None and os.path.isfile(recipe):
        with open(recipe) as handle:
            preset = (yaml.safe_load(handle) or {}).get("preset")
    return default if preset is None else str(preset)


def parse_study_configs(args: Iterable[str] | None = None, defaults: dict | None = None) -> list:
    """The studies a reward-hacking-study command line asks for, one `RewardHackingStudyConfig` per preset.

    Precedence, lowest first: the config's defaults, the script's `defaults`, the preset's settings, the `--config`
    recipe, the flags. `--preset all` (or `preset: all` in the recipe) gives one config per preset, and a
    comma-separated list (`--preset dataset-bias,paper-protocol`) one per listed preset, each writing to
    `<output_dir>/<preset>`.
    """
    import dataclasses

    from .study import ALL_PRESETS, RewardHackingStudyConfig, get_preset, preset_names

    args = list(sys.argv[1:] if args is None else args)
    defaults = dict(defaults or {})
    requested = _requested_preset(args, defaults.get("preset", RewardHackingStudyConfig.preset))
    names = preset_names(requested)
    configs = []
    for name in names:
        parser = TrlParser((RewardHackingStudyConfig,))
        parser.set_defaults(**{**defaults, **get_preset(name).settings, "preset": name})
        (config,) = parser.parse_args_and_config(args)
        if requested == ALL_PRESETS or len(names) > 1:
            config = dataclasses.replace(config, preset=name, output_dir=os.path.join(config.output_dir, name))
        configs.append(config)
    return configs


__all__ = ["ScriptParser", "end_distributed_run", "parse_study_configs", "resolve_resume_from_checkpoint"]
