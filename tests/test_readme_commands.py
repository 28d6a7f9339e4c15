"""Every command block of the README runs as pasted (issue 26, item 9): no `<...>` placeholders (shell variables
instead, each set in its block), every script, recipe and launcher config exists, every script's parser accepts its
command line, GPU commands are refused on a CPU machine with one message and parse once told to use the CPU, and the
CPU Quick start chain runs, each stage ending with its usable / NOT usable line."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")

#: Appended to the CPU Quick start commands in the chain test: the same scripts, recipes and code paths, test sizes.
TINY_FLAGS = {
    "train_rm.py": ["--testbed_num_train", "64", "--testbed_num_test", "32", "--max_steps", "3"],
    "sft.py": [
        "--testbed_num_train",
        "64",
        "--testbed_num_test",
        "16",
        "--max_steps",
        "3",
        "--oracle_check_prompts",
        "4",
    ],
    "rrpo.py": ["--testbed_num_train", "32", "--testbed_num_test", "8", "--max_steps", "2", "--max_eval_samples", "4"],
}


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            lines.append(line)
    return lines


def script_command(words: list[str]) -> tuple[str, list[str], str | None] | None:
    """(script file name, its arguments, accelerate config or None) of a `.venv/bin/accelerate launch` or
    `.venv/bin/python` command; None for any other command."""
    if words[:2] == [".venv/bin/accelerate", "launch"]:
        rest, config_file = words[2:], None
        if rest[:1] == ["--config_file"]:
            config_file, rest = rest[1], rest[2:]
        return Path(rest[0]).name, rest[1:], config_file
    if words[:1] == [".venv/bin/python"]:
        return Path(words[1]).name, words[2:], None
    return None


def every_command():
    for number, block in enumerate(bash_blocks(README)):
        variables = {}
        for line in commands(block):
            assignment = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(\S+)", line)
            if assignment:
                variables[assignment.group(1)] = assignment.group(2)
                continue
            yield number, line, dict(variables)


ALL = list(every_command())


def load_example(name: str):
    module_name = f"{name}_readme_example"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, REPO / "examples" / name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def test_the_readme_has_its_command_blocks():
    scripts = {script_command(shlex.split(line))[0] for _, line, _ in ALL if script_command(shlex.split(line))}
    assert {"train_rm.py", "sft.py", "rrpo.py", "reward_hacking_study.py", "evaluate_rm.py"} <= scripts


@pytest.mark.parametrize("number,line,variables", ALL, ids=[f"block{n}:{line[:60]}" for n, line, _ in ALL])
def test_a_readme_command_is_pasteable_and_its_script_accepts_it(number, line, variables, tmp_path):
    assert "<" not in line and ">" not in line, f"placeholder in {line!r}: use a shell variable"
    used = set(re.findall(r"\$([A-Z_][A-Z0-9_]*)", line))
    assert used <= set(variables), f"{sorted(used - set(variables))} not set in its block"
    words = shlex.split(line)
    parsed = script_command(words)
    if parsed is None:
        assert words[0] == "make" and re.search(rf"^{words[1]}:", (REPO / "Makefile").read_text(), flags=re.M)
        return
    script, args, config_file = parsed
    assert (REPO / "examples" / script).is_file()
    if config_file is not None:
        assert (REPO / config_file).is_file()
    # The variables' folders, as a user would have them.
    values = {name: str(tmp_path / name.lower()) for name in variables}
    args = [re.sub(r"\$([A-Z_][A-Z0-9_]*)", lambda m: values[m.group(1)], arg) for arg in args]
    if "--config" in args:
        assert (REPO / args[args.index("--config") + 1]).is_file()
    args = [str(REPO / arg) if arg.startswith("recipes/") else arg for arg in args]
    if script == "reward_hacking_study.py":
        from rrpo_hf.script_utils import parse_study_configs

        assert parse_study_configs(args)
        return
    if script == "study_overview.py":  # argparse: the folders of studies the block's earlier commands write
        assert load_example(script).make_parser().parse_args(args).studies
        return
    parser = load_example(script).make_parser()
    if config_file is not None:  # a GPU command
        import torch

        from rrpo_hf.script_utils import ScriptUsageError

        if not torch.cuda.is_available():
            with pytest.raises(ScriptUsageError, match="no CUDA GPU"):
                parser.check_arguments(args)
            args = [*args, "--bf16", "false", "--use_cpu", "true"]
    parser.parse_args_and_config(args)


@pytest.mark.slow
def test_the_cpu_quick_start_chain_runs_and_each_stage_says_whether_it_is_usable(tmp_path):
    """The Quick start blocks (stage 1, SFT, RRPO; several rewards) as pasted, in a fresh folder, at test sizes."""
    for name in ("examples", "recipes", ".venv"):
        os.symlink(REPO / name, tmp_path / name)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["TOKENIZERS_PARALLELISM"] = "false"
    ran = []
    for number, line, _ in ALL:
        words = shlex.split(line)
        parsed = script_command(words)
        if number not in (1, 2) or parsed is None:
            continue
        script, _, config_file = parsed
        assert config_file is None
        words = [*words, *TINY_FLAGS[script]]
        if "rm_multitask.yaml" in line:
            words += ["--testbed_num_train", "64", "--testbed_num_test", "32", "--max_steps", "3"]
        completed = subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, f"{line}\n{completed.stderr[-4000:]}"
        last = completed.stdout.strip().splitlines()[-1]
        assert last.startswith(("usable", "NOT usable")), f"{line}\n{completed.stdout[-2000:]}"
        ran.append(line)
    assert len(ran) == 6
    for folder in ("reward_model", "sft_policy", "rrpo_policy", "reward_model_base", "multitask_rm"):
        assert (tmp_path / "outputs" / folder / "config.json").is_file(), folder
    assert (tmp_path / "outputs" / "rrpo_multi_reward_policy" / "config.json").is_file()


def test_the_readme_python_snippets_compile_save_into_their_own_folders_and_evaluate():
    import ast

    snippets = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(snippets) >= 2
    cli_outputs = {"outputs/reward_model", "outputs/rrpo_policy", "outputs/sft_policy"}
    for snippet in snippets:
        ast.parse(snippet)
        written = set(re.findall(r'output_dir="([^"]+)"', snippet))
        assert not written & cli_outputs, f"a snippet writes into a CLI run's folder: {written & cli_outputs}"
        if "Trainer(" in snippet:
            assert "trainer.save_model()" in snippet and "trainer.evaluate()" in snippet
