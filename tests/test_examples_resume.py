"""The example scripts as a user runs them: resuming, seeding and what their output folders hold.

- An interrupted run (stopped at a checkpoint) resumed with `--resume_from_checkpoint true` ends with the same
  model as the uninterrupted run, and the resumed process trains only the remaining steps.
- The same `--seed` gives the same model (run twice in one process: nothing depends on earlier RNG use).
- A LoRA run's output folder holds the merged model or the adapter (`--save_merged`), never both, and loads
  without warnings; a full run holds the full model.

The scripts run in-process through their own parsers and `main()`, with tiny testbed settings.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


REPO = Path(__file__).resolve().parents[1]


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"resume_test_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def run_example(name: str, argv: list[str]):
    module = load_example(name)
    return module.main(*module.make_parser().parse_args_and_config(argv))


class StepCounter:
    """Counts `Trainer.training_step` calls (DiffROTrainer / RobustRewardTrainer call it through super())."""

    def __init__(self, monkeypatch):
        from transformers import Trainer

        self.calls = 0
        original = Trainer.training_step

        def counting(trainer, *args, **kwargs):
            self.calls += 1
            return original(trainer, *args, **kwargs)

        monkeypatch.setattr(Trainer, "training_step", counting)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs: max |diff| {(a[key] - b[key]).abs().max():.3g}"


# ------------------------------------------------------------------------------------------------ tiny settings

SFT_ARGS = [
    "--testbed_num_train",
    "48",
    "--testbed_num_test",
    "8",
    "--tiny_hidden_size",
    "32",
    "--tiny_num_hidden_layers",
    "1",
    "--tiny_intermediate_size",
    "64",
    "--per_device_train_batch_size",
    "8",
    "--num_generation_samples",
    "0",
    "--logging_steps",
    "1",
    "--lr_scheduler_type",
    "constant",
    "--warmup_steps",
    "0",
    "--save_strategy",
    "steps",
]
RM_ARGS = [
    "--testbed_num_train",
    "64",
    "--testbed_num_test",
    "16",
    "--hidden_size",
    "32",
    "--num_hidden_layers",
    "1",
    "--intermediate_size",
    "64",
    "--per_device_train_batch_size",
    "8",
    "--logging_steps",
    "1",
    "--lr_scheduler_type",
    "constant",
    "--warmup_steps",
    "0",
    "--save_strategy",
    "steps",
]


@pytest.fixture(scope="module")
def stage_outputs(tmp_path_factory):
    """A toy SFT policy and reward model folder, as sft.py / train_rm.py leave them for rrpo.py."""
    from rrpo_hf.models.cosyvoice2 import CosyVoice2LM, tiny_cosyvoice2_config
    from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
    from rrpo_hf.testbed import build_testbed_tokenizer

    root = tmp_path_factory.mktemp("stages")
    tokenizer = build_testbed_tokenizer(instruction_template="en")
    torch.manual_seed(0)
    policy = CosyVoice2LM(
        tiny_cosyvoice2_config(
            tokenizer,
            512,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
        )
    )
    policy.save_pretrained(root / "sft")
    tokenizer.save_pretrained(root / "sft")
    RobustSERForAudioClassification(
        RobustSERConfig(
            vocab_size=512,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )
    ).save_pretrained(root / "rm")
    return root


def rrpo_args(stage_outputs: Path) -> list[str]:
    return [
        "--model_name_or_path",
        str(stage_outputs / "sft"),
        "--reward_model_path",
        str(stage_outputs / "rm"),
        "--testbed_num_train",
        "32",
        "--testbed_num_test",
        "4",
        "--max_eval_samples",
        "4",
        "--max_new_tokens",
        "8",
        "--per_device_train_batch_size",
        "4",
        "--evaluate_before_training",
        "false",
        "--logging_steps",
        "1",
        "--save_strategy",
        "steps",
    ]


LORA_ARGS = ["--use_peft", "true", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj"]


# ------------------------------------------------------------------------------------------------ resume


def check_resume(tmp_path, monkeypatch, script: str, argv: list[str], steps: int = 4, interrupt_at: int = 2):
    """Uninterrupted `steps` vs stopped at `interrupt_at` and resumed with `--resume_from_checkpoint true`."""
    full_dir, resumed_dir = tmp_path / "uninterrupted", tmp_path / "resumed"
    run_example(
        script, [*argv, "--output_dir", str(full_dir), "--max_steps", str(steps), "--save_steps", str(interrupt_at)]
    )
    run_example(
        script,
        [*argv, "--output_dir", str(resumed_dir), "--max_steps", str(interrupt_at), "--save_steps", str(interrupt_at)],
    )
    checkpoint = resumed_dir / f"checkpoint-{interrupt_at}"
    stamp = (checkpoint / "trainer_state.json").stat().st_mtime_ns

    counter = StepCounter(monkeypatch)
    result = run_example(
        script,
        [
            *argv,
            "--output_dir",
            str(resumed_dir),
            "--max_steps",
            str(steps),
            "--save_steps",
            str(interrupt_at),
            "--resume_from_checkpoint",
            "true",
        ],
    )
    trainer = result["trainer"] if isinstance(result, dict) else result
    assert counter.calls == steps - interrupt_at, "the resumed run restarted instead of continuing"
    assert trainer.state.global_step == steps
    assert (checkpoint / "trainer_state.json").stat().st_mtime_ns == stamp, "the old checkpoint was overwritten"
    assert_same_weights(weights(resumed_dir), weights(full_dir))
    return trainer


@pytest.mark.slow
def test_sft_resumes_to_the_uninterrupted_model(tmp_path, monkeypatch):
    check_resume(tmp_path, monkeypatch, "sft", SFT_ARGS)


@pytest.mark.slow
def test_train_rm_resumes_to_the_uninterrupted_model(tmp_path, monkeypatch):
    # rm_robust (the toy recipe) uses EAM: its plan sampler's state is part of the checkpoint.
    check_resume(tmp_path, monkeypatch, "train_rm", RM_ARGS)


@pytest.mark.slow
def test_rrpo_lora_resumes_to_the_uninterrupted_model(tmp_path, monkeypatch, stage_outputs):
    trainer = check_resume(tmp_path, monkeypatch, "rrpo", [*rrpo_args(stage_outputs), *LORA_ARGS])
    assert trainer.is_peft_model
    # Checkpoints hold the adapter (what resuming loads); the final folder the merged model.
    assert (tmp_path / "resumed" / "checkpoint-2" / "adapter_model.safetensors").is_file()


def test_resume_true_without_a_checkpoint_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"no checkpoint-N folder in output_dir .*--save_strategy steps"):
        run_example("sft", [*SFT_ARGS, "--output_dir", str(tmp_path / "empty"), "--resume_from_checkpoint", "true"])


# ------------------------------------------------------------------------------------------------ seeds


@pytest.mark.parametrize("script", ["sft", "train_rm"])
def test_same_seed_gives_the_same_model(tmp_path, script):
    argv = {"sft": SFT_ARGS, "train_rm": RM_ARGS}[script]
    for name in ("a", "b"):
        torch.rand(7)  # earlier RNG use in the same process must not matter
        run_example(
            script,
            [*argv, "--output_dir", str(tmp_path / name), "--max_steps", "2", "--seed", "3", "--save_strategy", "no"],
        )
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))


def test_rrpo_same_seed_gives_the_same_lora_policy(tmp_path, stage_outputs):
    for name in ("a", "b"):
        torch.rand(7)
        run_example(
            "rrpo",
            [
                *rrpo_args(stage_outputs),
                *LORA_ARGS,
                "--output_dir",
                str(tmp_path / name),
                "--max_steps",
                "2",
                "--seed",
                "3",
                "--save_strategy",
                "no",
            ],
        )
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))


# ------------------------------------------------------------------------------------------------ saving


ADAPTER_FILES = {"adapter_model.safetensors", "adapter_config.json"}
FULL_FILES = {"model.safetensors", "config.json"}


def load_without_warnings(load, caplog):
    caplog.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # PEFT 0.21 calls a transformers-5 deprecated alias while loading any adapter: not about the folder.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        with caplog.at_level(logging.WARNING):
            model = load()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    return model


@pytest.mark.parametrize("script", ["sft", "rrpo"])
@pytest.mark.parametrize("save_merged", [True, False])
def test_lora_folder_holds_exactly_one_model_and_reloads(tmp_path, stage_outputs, caplog, script, save_merged):
    from peft import PeftModel

    from rrpo_hf.models.cosyvoice2 import CosyVoice2LM

    out = tmp_path / "out"
    base_args = rrpo_args(stage_outputs) if script == "rrpo" else SFT_ARGS
    argv = [
        *base_args,
        *LORA_ARGS,
        "--output_dir",
        str(out),
        "--max_steps",
        "1",
        "--save_strategy",
        "no",
        "--save_merged",
        str(save_merged).lower(),
    ]
    if script == "sft":
        # An adapter needs a base model folder to name: start from the saved toy policy.
        argv += ["--model_name_or_path", str(stage_outputs / "sft")]
    result = run_example(script, argv)
    trainer = result["trainer"] if isinstance(result, dict) else result
    # A stale file of the other kind (an earlier save, or a checkpoint pushed into output_dir) must go when the
    # folder is saved again -- exactly what push_to_hub does before uploading -- and nothing else is touched.
    (out / "notes.txt").write_text("user file")
    if save_merged:
        (out / "adapter_config.json").write_text("{}")
    else:
        (out / "model.safetensors").write_bytes(b"stale")
    trainer.save_model(str(out))
    files = {p.name for p in out.iterdir()}
    assert (out / "notes.txt").read_text() == "user file"
    assert "tokenizer.json" in files

    trained = trainer.accelerator.unwrap_model(trainer.model)
    if save_merged:
        assert FULL_FILES <= files and not ADAPTER_FILES & files
        reloaded = load_without_warnings(lambda: CosyVoice2LM.from_pretrained(out), caplog)
        expected = copy.deepcopy(trained).merge_and_unload().state_dict()
        for key, value in expected.items():
            torch.testing.assert_close(reloaded.state_dict()[key], value)
    else:
        assert ADAPTER_FILES <= files and not {"model.safetensors", "config.json"} & files
        adapter_config = json.loads((out / "adapter_config.json").read_text())
        assert adapter_config["base_model_name_or_path"] == str(stage_outputs / "sft")
        base = CosyVoice2LM.from_pretrained(stage_outputs / "sft")
        reloaded = load_without_warnings(lambda: PeftModel.from_pretrained(base, out), caplog)
        lora = {key: value for key, value in trained.state_dict().items() if "lora_" in key}
        assert lora
        for key, value in lora.items():
            torch.testing.assert_close(reloaded.state_dict()[key], value)
    if script == "rrpo":
        card = (out / "README.md").read_text()
        assert f"| saved weights | {'merged' if save_merged else 'adapter'} |" in card
        assert ("PeftModel.from_pretrained" in card) != save_merged


def test_rrpo_continues_a_lora_sft_adapter_folder(tmp_path, stage_outputs):
    """sft.py --save_merged false writes an adapter; rrpo.py loads it on its base and trains that adapter on."""
    from peft import PeftModel

    sft_out = tmp_path / "sft_adapter"
    # No LoRA dropout: the adapter's own config travels with it, and dropout would make step 1's KL non-zero.
    run_example(
        "sft",
        [
            *SFT_ARGS,
            *LORA_ARGS,
            "--lora_dropout",
            "0",
            "--model_name_or_path",
            str(stage_outputs / "sft"),
            "--output_dir",
            str(sft_out),
            "--max_steps",
            "2",
            "--save_strategy",
            "no",
            "--save_merged",
            "false",
        ],
    )
    assert (sft_out / "adapter_config.json").is_file() and not (sft_out / "config.json").exists()
    argv = rrpo_args(stage_outputs)
    argv[argv.index("--model_name_or_path") + 1] = str(sft_out)
    trainer = run_example(
        "rrpo",
        [
            *argv,
            *LORA_ARGS,
            "--output_dir",
            str(tmp_path / "rrpo"),
            "--max_steps",
            "2",
            "--save_strategy",
            "no",
            "--beta",
            "0.1",
        ],
    )
    policy = trainer.accelerator.unwrap_model(trainer.model)
    assert isinstance(policy, PeftModel) and trainer.ref_adapter_name == "ref"
    sft_lora = load_file(sft_out / "adapter_model.safetensors")
    trained = {k: v for k, v in policy.state_dict().items() if "lora_" in k and ".ref." not in k}
    assert len(trained) == len(sft_lora) > 0
    assert any(not torch.equal(v, sft_lora[k.replace(".default", "")]) for k, v in trained.items())
    kl = [entry["kl"] for entry in trainer.state.log_history if "kl" in entry]
    assert kl[0] == pytest.approx(0.0, abs=1e-6)  # the reference is the SFT adapter, not the bare base


def test_full_fine_tuning_folder_holds_the_full_model(tmp_path, stage_outputs, caplog):
    from rrpo_hf.models.cosyvoice2 import CosyVoice2LM

    out = tmp_path / "out"
    trainer = run_example(
        "rrpo", [*rrpo_args(stage_outputs), "--output_dir", str(out), "--max_steps", "1", "--save_strategy", "no"]
    )
    files = {p.name for p in out.iterdir()}
    assert FULL_FILES <= files and not ADAPTER_FILES & files
    reloaded = load_without_warnings(lambda: CosyVoice2LM.from_pretrained(out), caplog)
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value)
    assert "| saved weights | full |" in (out / "README.md").read_text()
