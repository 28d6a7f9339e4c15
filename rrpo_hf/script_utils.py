"""Helpers of the example scripts: argument parsing with a toy recipe (recipe keys and flags checked, with "did you
mean"), one resolver of model and dataset paths, dataset loading as TRL's scripts do it, `--resume_from_checkpoint
true`, one-line errors printed once per launch, and a clean end of a distributed run."""

from __future__ import annotations

import difflib
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable

from trl import TrlParser


_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0", "")

#: `load_dataset` builder of each data-file extension (what TRL's scripts accept as `--dataset_name`).
DATA_FILE_BUILDERS = {
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".txt": "text",
}

#: A Hub repository id: `name` or `namespace/name` (letters, digits, `-`, `_`, `.`).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")

#: Folders the scripts write to by default: a path under them is a local path even before it exists.
_LOCAL_ROOTS = ("outputs", "data")


class ScriptUsageError(ValueError):
    """A command line, recipe or path a script cannot run with. Scripts print it as one line, once per launch."""


def looks_local(path: str, bare_names_are_hub_ids: bool = False) -> bool:
    """Whether `path` names a local file or folder rather than a Hub id, judged without touching the network.

    Local: anything that exists; a path starting with `/`, `.` or `~`; one with a data-file or checkpoint suffix;
    one with more than one `/` (no Hub id has two); one under an existing folder or under `outputs/` or `data/`.
    A bare name without `/` is local for models (Hub models live under a namespace) and a Hub id for datasets when
    `bare_names_are_hub_ids` (legacy dataset names such as `imdb`).
    """
    path = os.fspath(path)
    if os.path.exists(path):
        return True
    if path.startswith(("/", ".", "~")) or os.sep != "/" and os.sep in path:
        return True
    if os.path.splitext(path)[1].lower() in (*DATA_FILE_BUILDERS, ".pt", ".onnx", ".safetensors", ".bin"):
        return True
    if not _HUB_ID.match(path):
        return True
    if "/" not in path:
        return not bare_names_are_hub_ids
    first = path.split("/", 1)[0]
    return first in _LOCAL_ROOTS or os.path.isdir(first)


def resolve_path(path: str, what: str, command: str | None = None, bare_names_are_hub_ids: bool = False) -> str:
    """`path` unchanged if it exists or is a Hub id; a `ScriptUsageError` naming it if it is a missing local path.

    The one check every script runs on every model, tokenizer and dataset path it is given, before any Hub call: a
    mistyped folder fails at once instead of after the Hub client's retries with a Hub error. `command` is the run
    that writes this output, suggested in the message.
    """
    path = os.fspath(path)
    expanded = os.path.expanduser(path)
    if os.path.exists(expanded) or not looks_local(path, bare_names_are_hub_ids):
        return expanded if os.path.exists(expanded) else path
    hint = f"Run `{command}` first, or pass" if command else "Pass"
    parent = os.path.dirname(os.path.abspath(expanded))
    near = ""
    if os.path.isdir(parent):
        close = difflib.get_close_matches(os.path.basename(expanded), os.listdir(parent), n=3)
        if close:
            near = f" Did you mean {', '.join(repr(os.path.join(os.path.dirname(path), c)) for c in close)}?"
    raise ScriptUsageError(f"No {what} at {path}: no such local file or folder.{near} {hint} the {what}'s location.")


def require_saved_model(path: str, what: str, command: str | None = None) -> str:
    """`resolve_path` for a model folder, which must also hold a `config.json`, `adapter_config.json` or `llm.pt`."""
    path = resolve_path(path, what, command)
    markers = ("config.json", "llm.pt", "adapter_config.json")
    if os.path.isdir(path) and not any(os.path.isfile(os.path.join(path, name)) for name in markers):
        rerun = f" Re-run `{command}`." if command else ""
        raise ScriptUsageError(f"{path} holds no {what} (no config.json, adapter_config.json or llm.pt).{rerun}")
    return path


def is_saved_dataset_folder(path: str) -> bool:
    """A `Dataset.save_to_disk` / `DatasetDict.save_to_disk` folder (rather than a folder of data files)."""
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or (
        os.path.isfile(os.path.join(path, "state.json")) and os.path.isfile(os.path.join(path, "dataset_info.json"))
    )


def load_dataset_source(name: str, config: str | None = None, what: str = "dataset"):
    """A dataset as TRL's scripts take `--dataset_name`, plus `save_to_disk` folders: a `Dataset` or `DatasetDict`.

    `name` is a `save_to_disk` folder, a folder of data files (`train.jsonl`, `test.jsonl`, `*.parquet`, ...: one
    split per file name, as `datasets.load_dataset(folder)` reads them), one data file (`.json`, `.jsonl`, `.csv`,
    `.tsv`, `.parquet`, `.arrow`, `.txt`: the `train` split) or a Hub id; `config` is the Hub dataset's
    configuration (`--dataset_config`). A missing local path fails before any Hub call (`resolve_path`).
    """
    from datasets import load_dataset, load_from_disk

    path = resolve_path(name, what, bare_names_are_hub_ids=True)
    if os.path.isfile(path):
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in DATA_FILE_BUILDERS:
            raise ScriptUsageError(
                f"{path} is a file of an unknown kind; pass a data file ({', '.join(DATA_FILE_BUILDERS)}), a folder "
                "of them, a `save_to_disk` folder or a Hub dataset id."
            )
        extra = {"delimiter": "\t"} if suffix == ".tsv" else {}
        return load_dataset(DATA_FILE_BUILDERS[suffix], data_files=path, **extra)
    if os.path.isdir(path):
        if is_saved_dataset_folder(path):
            return load_from_disk(path)
        return load_dataset(path, config)
    return load_dataset(path, config)


def is_main_launch_process() -> bool:
    """The process of a launch that reports (rank 0, or the only process)."""
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) in ("0", "")


def run_script(parse: Callable[[], tuple], main: Callable[..., object]) -> None:
    """Parse, run `main(*parsed)`, end the distributed run; a user error is printed as one line, once per launch.

    A `ValueError` (bad flag, recipe key, path, dataset row, label; each names the problem and the fix) or a
    missing file ends the script with exit code 2 and `error: <message>` on the main process only, instead of one
    traceback per process repeated by the launcher. `RRPO_HF_TRACEBACK=1` prints the traceback too.
    """
    try:
        parsed = parse()
        main(*parsed)
    except (ValueError, FileNotFoundError) as error:
        if is_main_launch_process():
            if os.environ.get("RRPO_HF_TRACEBACK", "").lower() in _TRUE:
                traceback.print_exc()
            print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    end_distributed_run()


class ScriptParser(TrlParser):
    """A `TrlParser` whose defaults are the library's, plus a toy recipe for the argument-free run.

    A script run without `--config` and without `--dataset_name` (the built-in testbed) reads `toy_config` first,
    as if `--config toy_config` had been given; flags still override it. Any other run gets the dataclasses'
    own defaults for every key its recipe and flags do not set -- never the toy's (60 steps, CPU, toy lr).
    """

    def __init__(
        self,
        dataclass_types,
        toy_config: str | os.PathLike | Callable[[list[str]], str | os.PathLike] | None = None,
        **kwargs,
    ):
        super().__init__(dataclass_types, **kwargs)
        # A path, or a function of the command line that picks the toy recipe (train_rm.py: one per --tasks).
        self.toy_config = toy_config if toy_config is None or callable(toy_config) else os.fspath(toy_config)

    @staticmethod
    def is_toy_run(args: Iterable[str]) -> bool:
        args = list(args)
        given = {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}
        return "--config" not in given and "--dataset_name" not in given

    def known_keys(self) -> set[str]:
        return {action.dest for action in self._actions} | {"env"}

    def check_arguments(self, args: Iterable[str]) -> dict:
        """Check a command line before anything is built; return its recipe (`{}` without `--config`).

        Unknown recipe keys and flags get a "did you mean"; a recipe or flag asking for bf16/fp16 on a machine
        without a CUDA GPU is refused once, here, rather than by `TrainingArguments` in every launched process.
        """
        import yaml

        args = list(args)
        recipe, recipe_path = {}, None
        if "--config" in args:
            index = args.index("--config")
            if index + 1 >= len(args):
                raise ScriptUsageError("--config needs a recipe path (a YAML file).")
            recipe_path = args[index + 1]
            if not os.path.isfile(recipe_path):
                raise ScriptUsageError(f"No recipe at {recipe_path}: no such file.")
            with open(recipe_path) as handle:
                recipe = yaml.safe_load(handle) or {}
            if not isinstance(recipe, dict):
                raise ScriptUsageError(f"The recipe {recipe_path} must be a YAML mapping of settings.")
        known = self.known_keys()
        option_strings = {option for action in self._actions for option in action.option_strings}
        for key in recipe:
            if key not in known:
                raise ScriptUsageError(f"Unknown key {key!r} in the recipe {recipe_path}.{_did_you_mean(key, known)}")
        flags = {}
        for position, arg in enumerate(args):
            if not arg.startswith("--") or arg == "--config" or position > 0 and args[position - 1] == "--config":
                continue
            flag, _, value = arg.partition("=")
            if flag not in option_strings:
                raise ScriptUsageError(
                    f"Unknown flag {flag}.{_did_you_mean(flag[2:], {o[2:] for o in option_strings}, prefix='--')}"
                )
            if not value and position + 1 < len(args) and not args[position + 1].startswith("--"):
                value = args[position + 1]
            flags[flag[2:]] = value or "true"
        self._check_precision(recipe, flags, recipe_path)
        return recipe

    @staticmethod
    def _check_precision(recipe: dict, flags: dict, recipe_path: str | None) -> None:
        import torch
        import transformers.training_args as training_args

        # The checks TrainingArguments itself runs later, once per process; here once, with the fix.
        supported = {"bf16": training_args.is_torch_bf16_gpu_available(), "fp16": torch.cuda.is_available()}
        for key in ("bf16", "fp16"):
            value = flags.get(key, recipe.get(key, False))
            if str(value).lower() in _TRUE and not supported[key]:
                source = f"the recipe {recipe_path}" if key not in flags else f"--{key}"
                cpu_flags = "--bf16 false --use_cpu true"
                if "dtype" in recipe or "dtype" in flags:
                    cpu_flags += " --dtype float32"
                raise ScriptUsageError(
                    f"{source} trains in {key} on GPUs, and this machine has no CUDA GPU. On CPU, run a recipe of "
                    f"recipes/toy/ (or no --config), or override: {cpu_flags} (slow for a 0.5B model)."
                )

    def parse_args_and_config(self, args: Iterable[str] | None = None, **kwargs):
        args = list(sys.argv[1:] if args is None else args)
        if self.toy_config is not None and self.is_toy_run(args):
            toy = self.toy_config(args) if callable(self.toy_config) else self.toy_config
            args = ["--config", os.fspath(toy), *args]
        self.check_arguments(args)
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


def _did_you_mean(word: str, candidates: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, sorted(candidates), n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(prefix + c for c in close)}?" if close else " See --help for the settings."


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


def run_studies(configs: list, main: Callable[[object], object]) -> list:
    """`main(config)` for each study config; Ctrl-C or SIGTERM end the command with one line saying where the
    finished seeds are (`run_study` has already stopped every worker process) and exit code 130."""
    results = []
    for config in configs:
        try:
            results.append(main(config))
        except KeyboardInterrupt:
            print(
                f"\nInterrupted: every worker process is stopped; the finished seeds' results are in "
                f"{os.path.join(config.output_dir, 'seeds')}/.",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(130)
    return results


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


__all__ = [
    "DATA_FILE_BUILDERS",
    "ScriptParser",
    "ScriptUsageError",
    "end_distributed_run",
    "is_main_launch_process",
    "load_dataset_source",
    "looks_local",
    "parse_study_configs",
    "require_saved_model",
    "resolve_path",
    "resolve_resume_from_checkpoint",
    "run_script",
    "run_studies",
]
