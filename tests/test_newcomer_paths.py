"""A newcomer's first commands on their own data (issue 26): the SFT script on a user-built `save_to_disk` folder, a
folder of JSONL files and one JSONL file, with TrainingArguments' default `remove_unused_columns`; missing local paths
that fail at once, naming the path, before any Hub call; recipe typos with a "did you mean"; GPU recipes refused once
on a CPU machine; a user README in output_dir that survives a save."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


def load_example(name):
    module_name = f"{name}_example_paths"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, REPO / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[module_name]


@pytest.fixture(scope="module")
def saved_policy(tmp_path_factory):
    """A tiny CosyVoice2 policy and its tokenizer, saved as sft.py saves them."""
    from rrpo_hf import build_tiny_cosyvoice2_policy
    from rrpo_hf.testbed import build_testbed_tokenizer

    folder = tmp_path_factory.mktemp("policy")
    tokenizer = build_testbed_tokenizer()
    model = build_tiny_cosyvoice2_policy(tokenizer, 512, hidden_size=32, num_hidden_layers=1, intermediate_size=64)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def user_corpus():
    from rrpo_hf.testbed import make_emotion_corpus

    return make_emotion_corpus(language="alpha", num_train=24, num_test=8, codebook_size=512, seed=0)


def _write_jsonl(dataset, path):
    names = dataset.features["emotion"].names
    with open(path, "w") as handle:
        for row in dataset:
            handle.write(
                json.dumps(
                    {"text": row["text"], "speech_tokens": row["speech_tokens"], "emotion": names[row["emotion"]]}
                )
                + "\n"
            )


@pytest.mark.parametrize("kind", ["save_to_disk", "jsonl_folder", "jsonl_file"])
def test_sft_script_trains_on_a_user_dataset_with_default_column_removal(kind, tmp_path, saved_policy, user_corpus):
    if kind == "save_to_disk":
        source = tmp_path / "corpus"
        user_corpus.save_to_disk(source)
    elif kind == "jsonl_folder":
        source = tmp_path / "jsonl"
        source.mkdir()
        _write_jsonl(user_corpus["train"], source / "train.jsonl")
        _write_jsonl(user_corpus["test"], source / "test.jsonl")
    else:
        source = tmp_path / "train.jsonl"
        _write_jsonl(user_corpus["train"], source)
    sft = load_example("sft")
    # The command line: no recipe, so no `remove_unused_columns: false`.
    parsed = sft.make_parser().parse_args_and_config(
        [
            "--dataset_name",
            str(source),
            "--model_name_or_path",
            str(saved_policy),
            "--output_dir",
            str(tmp_path / "out"),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "8",
            "--report_to",
            "none",
            "--save_strategy",
            "no",
            "--num_generation_samples",
            "1",
        ]  # fmt: skip
    )
    assert parsed[1].remove_unused_columns is True
    result = sft.main(*parsed)
    assert result["trainer"].state.global_step == 2
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert ("eval_loss" in result["metrics"]) == (kind != "jsonl_file")  # a lone file is the train split only


def test_column_removal_keeps_what_the_collator_reads_and_drops_the_rest(saved_policy, user_corpus):
    from transformers import AutoTokenizer, TrainingArguments

    from rrpo_hf import CosyVoice2SFTTrainer, build_cosyvoice2_sft_collator
    from rrpo_hf.models.cosyvoice2 import CosyVoice2LM

    model = CosyVoice2LM.from_pretrained(saved_policy)
    tokenizer = AutoTokenizer.from_pretrained(saved_policy)
    dataset = user_corpus["train"].add_column("notes", ["x"] * len(user_corpus["train"]))
    collator = build_cosyvoice2_sft_collator(tokenizer, model.config, dataset.features["emotion"])
    trainer = CosyVoice2SFTTrainer(
        model=model,
        args=TrainingArguments(output_dir="unused", report_to="none", use_cpu=True),
        train_dataset=dataset,
        data_collator=collator,
    )
    kept = trainer._remove_unused_columns(dataset).column_names
    assert {"text", "speech_tokens", "emotion"} <= set(kept)
    assert "notes" not in kept and "speaker" not in kept


def _run(args, timeout=60, env=None):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(env or {}),
    }
    env.pop("HF_HUB_OFFLINE", None)  # online as a user's shell is: the check must not need the Hub at all
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    return completed, time.perf_counter() - start


MISSING_PATH_CASES = [
    ("train_rm", ["--model_name_or_path", "outputs/no_such_rm", "--output_dir", "{tmp}/rm_out"], "outputs/no_such_rm"),
    ("train_rm", ["--dataset_name", "{tmp}/no_such_tokens", "--output_dir", "{tmp}/rm_out"], "no_such_tokens"),
    ("sft", ["--model_name_or_path", "{tmp}/no_such_policy", "--output_dir", "{tmp}/sft"], "no_such_policy"),
    ("sft", ["--dataset_name", "{tmp}/no_such_data.jsonl", "--output_dir", "{tmp}/sft"], "no_such_data.jsonl"),
    ("evaluate_rm", ["--reward_model", "{tmp}/rm", "--datasets", "{tmp}/no_such_tokens"], "no_such_tokens"),
    ("evaluate_rm", ["--reward_model", "{tmp}/no_such_rm", "--datasets", "{tmp}/rm"], "no_such_rm"),
    ("rrpo", ["--model_name_or_path", "{tmp}/nope", "--output_dir", "{tmp}/rrpo"], "nope"),
]


def _fill(flags, tmp_path):
    (tmp_path / "rm").mkdir(exist_ok=True)
    (tmp_path / "rm" / "config.json").write_text("{}")
    return [flag.replace("{tmp}", str(tmp_path)) for flag in flags]


@pytest.mark.parametrize("script,flags,named", MISSING_PATH_CASES)
def test_a_missing_local_path_fails_in_seconds_naming_it(script, flags, named, tmp_path):
    from rrpo_hf.script_utils import ScriptUsageError

    module = load_example(script)
    start = time.perf_counter()
    with pytest.raises(ScriptUsageError, match="no such local file or folder") as raised:
        module.main(*module.make_parser().parse_args_and_config(_fill(flags, tmp_path)))
    assert time.perf_counter() - start < 5
    assert named in str(raised.value)


def test_a_missing_local_path_is_one_line_and_never_reaches_the_hub(tmp_path):
    script, flags, named = MISSING_PATH_CASES[4]
    args = [str(REPO / "examples" / f"{script}.py"), *_fill(flags, tmp_path)]
    # Online, as a user's shell is, but through a proxy that does not exist: a Hub call would end in a connection
    # error after retries, not in our message.
    completed, seconds = _run(args, env={"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
    assert completed.returncode == 2, completed.stderr[-3000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "no such local file or folder" in lines[0], completed.stderr
    assert "Traceback" not in completed.stderr and "huggingface.co" not in completed.stderr


def test_recipe_typo_and_unknown_flag_say_did_you_mean(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("output_dir: out\nlerning_rate: 1.0e-3\n")
    rm = load_example("train_rm")
    from rrpo_hf.script_utils import ScriptUsageError

    with pytest.raises(ScriptUsageError, match="Did you mean learning_rate"):
        rm.make_parser().parse_args_and_config(["--config", str(recipe)])
    with pytest.raises(ScriptUsageError, match="Did you mean --num_train_epochs"):
        rm.make_parser().parse_args_and_config(["--num_train_epoch", "3"])


def test_gpu_recipe_on_a_cpu_machine_fails_once_with_one_message(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the machine has a GPU")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "RANK": "3",
    }
    args = [
        str(REPO / "examples" / "sft.py"),
        "--config", str(REPO / "recipes" / "cosyvoice2-0.5b" / "sft_lora.yaml"),
        "--model_name_or_path", str(tmp_path),
        "--dataset_name", str(tmp_path),
    ]  # fmt: skip
    from rrpo_hf.script_utils import ScriptUsageError

    with pytest.raises(ScriptUsageError, match="no CUDA GPU") as raised:
        load_example("sft").make_parser().parse_args_and_config(args[1:])
    assert "bf16" in str(raised.value) and "recipes/toy" in str(raised.value) and "\n" not in str(raised.value)
    # Rank 0 prints that one line (run_script, as in the missing-path test); every other process of the launch exits
    # silently with the same code, so an 8-process launch shows the message once, not 8 tracebacks.
    other = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and other.stderr.strip() == "", other.stderr[-2000:]


def test_the_argument_free_multitask_run_reads_the_multitask_toy_recipe():
    rm = load_example("train_rm")
    _, training_args, _ = rm.make_parser().parse_args_and_config(["--tasks", "emotion,asr,quality"])
    assert training_args.tasks == ["emotion", "asr", "quality"]  # the flag overrides the recipe's tasks
    assert training_args.learning_rate == 3e-3 and training_args.num_train_epochs == 24
    assert training_args.output_dir == "outputs/multitask_rm"
    _, emotion_args, _ = rm.make_parser().parse_args_and_config(["--output_dir", "x"])
    assert emotion_args.learning_rate == 1e-3 and emotion_args.output_dir == "x"
