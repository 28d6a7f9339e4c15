"""Every shipped recipe, parsed by its example script's parser, means exactly what it says.

A key the YAML sets comes out with the YAML's value; a key it does not set keeps the library default of its
dataclass (TrainingArguments / DiffROConfig / RobustRewardConfig / the script's arguments), never a toy value of the
script. bf16 recipes are parsed with transformers' bf16-GPU check stubbed (this machine has no GPU); their values
are not changed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import runpy
import sys
from enum import Enum
from pathlib import Path

import pytest
import yaml


REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"


def script_of(recipe: Path) -> str:
    name = recipe.stem
    if name == "study" or name.startswith("study_"):
        return "reward_hacking_study"
    if name.startswith("sft"):
        return "sft"
    if name.startswith("rm_"):
        return "train_rm"
    if name.startswith(("rrpo", "diffro")):
        return "rrpo"
    if name.startswith("grpo"):
        return "grpo"
    raise AssertionError(f"No example script is known for {recipe}; add it to script_of().")


TRAINING_RECIPES = sorted(p for p in RECIPES.glob("*/*.yaml") if p.parent.name != "accelerate_configs")


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_test_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def make_parser(name: str):
    if name == "reward_hacking_study":
        from trl import TrlParser

        from rrpo_hf.study import RewardHackingStudyConfig

        return TrlParser((RewardHackingStudyConfig,))
    return load_example(name).make_parser()


@pytest.fixture(autouse=True)
def bf16_gpu_check_passes(monkeypatch):
    import transformers.training_args

    monkeypatch.setattr(transformers.training_args, "is_torch_bf16_gpu_available", lambda: True)


def plain(value):
    """Parsed values as YAML writes them (enums by value)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def yaml_value_matches(key: str, parsed, written) -> bool:
    parsed, written = plain(parsed), plain(written)
    if key == "report_to" and isinstance(written, str):  # TrainingArguments keeps a list of integrations
        return parsed in (written, [written]) or (written == "none" and parsed == [])
    if key == "lora_target_modules" and isinstance(written, list):
        return sorted(parsed) == sorted(written)
    if isinstance(written, list) and isinstance(parsed, (list, tuple)):
        return list(parsed) == written
    if isinstance(written, (int, float)) and not isinstance(written, bool) and isinstance(parsed, (int, float)):
        return float(parsed) == float(written)
    return parsed == written


@pytest.mark.parametrize("recipe", TRAINING_RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_parses_to_its_values_and_library_defaults(recipe):
    written = yaml.safe_load(recipe.read_text())
    if script_of(recipe) == "reward_hacking_study":  # the script's own path: preset, then recipe, then flags
        from rrpo_hf.script_utils import parse_study_configs

        outputs = parse_study_configs(["--config", str(recipe)])
    else:
        outputs = make_parser(script_of(recipe)).parse_args_and_config(["--config", str(recipe)])

    # Several presets: one study each, into <output_dir>/<preset> (tests/test_study_presets.py checks those two).
    per_preset = {"preset", "output_dir"} if len(outputs) > 1 else set()
    seen = set(per_preset)
    for output in outputs:
        cls = type(output)
        field_names = {f.name for f in dataclasses.fields(cls) if f.init} - per_preset
        set_here = {key: value for key, value in written.items() if key in field_names}
        seen |= set(set_here)
        for key, value in set_here.items():
            assert yaml_value_matches(key, getattr(output, key), value), (
                f"{recipe.name}: {key} = {getattr(output, key)!r}, the recipe says {value!r}"
            )
        # Keys the recipe leaves out: what the dataclass alone gives with the recipe's keys (same __post_init__); a
        # study starts from its preset.
        if hasattr(cls, "from_preset"):
            reference = cls.from_preset(output.preset, **{k: v for k, v in set_here.items() if k != "preset"})
        else:
            reference = cls(**set_here)
        for name in field_names - set(set_here):
            assert plain(getattr(output, name)) == plain(getattr(reference, name)), (
                f"{recipe.name}: {name} = {getattr(output, name)!r}, but the recipe does not set it and "
                f"{cls.__name__}'s default is {getattr(reference, name)!r}"
            )
    assert set(written) <= seen, f"{recipe.name} sets keys no argument class has: {set(written) - seen}"


@pytest.mark.parametrize(
    "recipe",
    [p for p in TRAINING_RECIPES if p.parent.name in ("cosyvoice2-0.5b", "cosyvoice3-0.5b")],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_gpu_recipes_run_their_epochs_on_the_accelerator(recipe):
    written = yaml.safe_load(recipe.read_text())
    training_args = make_parser(script_of(recipe)).parse_args_and_config(["--config", str(recipe)])[1]
    assert "max_steps" not in written
    assert training_args.max_steps == -1  # num_train_epochs decides, as the recipe says
    assert training_args.num_train_epochs == written["num_train_epochs"]
    assert training_args.use_cpu is False
    assert training_args.bf16 is True


def test_no_recipe_uses_deprecated_training_arguments():
    for recipe in TRAINING_RECIPES:
        written = yaml.safe_load(recipe.read_text())
        assert not {"gradient_checkpointing", "gradient_checkpointing_kwargs"} & set(written), recipe.name


@pytest.mark.parametrize(
    ("script", "toy_recipe"),
    [("sft", "sft.yaml"), ("train_rm", "rm_robust.yaml"), ("rrpo", "rrpo.yaml"), ("grpo", "grpo.yaml")],
)
def test_argument_free_run_is_the_toy_recipe_and_a_dataset_run_is_not(script, toy_recipe):
    parser_of = lambda: make_parser(script)  # noqa: E731  (fresh parser: parsing a config mutates defaults)
    toy = parser_of().parse_args_and_config([])
    recipe = parser_of().parse_args_and_config(["--config", str(RECIPES / "toy" / toy_recipe)])
    assert [dataclasses.asdict(a) for a in toy] == [dataclasses.asdict(a) for a in recipe]
    assert toy[1].use_cpu is False  # the toy never forces the CPU on a machine with a GPU

    # Flags still override the toy recipe.
    flagged = parser_of().parse_args_and_config(["--learning_rate", "0.25", "--seed", "7"])[1]
    assert flagged.learning_rate == 0.25 and flagged.seed == 7

    # A dataset run without a recipe starts from the library defaults, not from the toy's.
    training_args = parser_of().parse_args_and_config(["--dataset_name", "org/data", "--output_dir", "o"])[1]
    reference = type(training_args)(output_dir="o")
    for name in (
        "max_steps",
        "learning_rate",
        "num_train_epochs",
        "lr_scheduler_type",
        "use_cpu",
        "per_device_train_batch_size",
        "logging_steps",
    ):
        assert plain(getattr(training_args, name)) == plain(getattr(reference, name)), name


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "examples").glob("*.py")))
def test_every_example_prints_its_help(script, monkeypatch, capsys):
    # argparse %-formats every help string, so a bare '%' in a config field's help breaks `--help` only
    monkeypatch.setattr(sys, "argv", [str(REPO / "examples" / script), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "examples" / script), run_name="__main__")
    assert exit_info.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out
