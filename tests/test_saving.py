"""Saves are whole (a killed save leaves the old model or the new one), shareable (umask modes), and keep
foreign files."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
from rrpo_hf.utils.saving import (
    JOURNAL_NAME,
    STAGING_PREFIX,
    IncompleteCheckpointError,
    atomic_write,
    atomic_write_text,
    recover_interrupted_save,
)


REPO = Path(__file__).resolve().parents[1]


def tiny_rm(seed: int, num_labels: int = 3) -> RobustSERForAudioClassification:
    torch.manual_seed(seed)
    config = RobustSERConfig(
        vocab_size=16,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=num_labels,
    )
    return RobustSERForAudioClassification(config).eval()


def tiny_policy():
    from rrpo_hf.models.cosyvoice2 import CosyVoice2LM, tiny_cosyvoice2_config
    from rrpo_hf.models.cosyvoice2.tokenization import build_tiny_cosyvoice2_tokenizer

    tokenizer = build_tiny_cosyvoice2_tokenizer(["ka", "mi"])
    config = tiny_cosyvoice2_config(tokenizer, 16, hidden_size=16, num_hidden_layers=1, intermediate_size=32)
    return CosyVoice2LM(config)


def same_weights(model, other) -> bool:
    mine, theirs = model.state_dict(), other.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((STAGING_PREFIX, JOURNAL_NAME, ".")))


@pytest.fixture
def umask():
    def set_umask(mask):
        os.umask(mask)

    previous = os.umask(0o022)
    yield set_umask
    os.umask(previous)


# ------------------------------------------------------------------------------------------------ file modes
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_model_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    tiny_rm(0).save_pretrained(tmp_path / "rm")
    tiny_policy().save_pretrained(tmp_path / "policy")
    files = [p for folder in ("rm", "policy") for p in (tmp_path / folder).iterdir()]
    # model.safetensors (safetensors writes 0600 temp files) and the bundled remote code (tempfile) included.
    assert {"model.safetensors", "eam.py", "modeling_robust_ser.py", "config.json"} <= {p.name for p in files}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(expected) for p in files}


def test_atomic_write_modes_and_failure(tmp_path, umask):
    card = atomic_write_text(tmp_path / "README.md", "card")
    assert card.stat().st_mode & 0o777 == 0o644
    os.chmod(card, 0o640)
    atomic_write_text(card, "new card")  # overwriting keeps the file's permissions, as writing into it would
    assert card.read_text() == "new card" and card.stat().st_mode & 0o777 == 0o640

    def half_then_fail(path):
        Path(path).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(card, half_then_fail)
    assert card.read_text() == "new card" and sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


def test_trainer_model_card_and_llm_pt_are_readable_by_others(tmp_path, umask):
    from rrpo_hf.trainers import RobustRewardConfig, RobustRewardTrainer

    trainer = RobustRewardTrainer(
        model=tiny_rm(0), args=RobustRewardConfig(output_dir=str(tmp_path / "rm"), use_cpu=True, report_to="none")
    )
    trainer.create_model_card()
    assert (tmp_path / "rm" / "README.md").stat().st_mode & 0o777 == 0o644
    llm_pt = Path(tiny_policy().save_cosyvoice(tmp_path / "release"))
    assert llm_pt.stat().st_mode & 0o777 == 0o644


def test_lora_adapter_saved_by_a_trainer_is_readable_by_others(tmp_path, umask):
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from rrpo_hf.trainers.saving import MergedSaveMixin

    class AdapterTrainer(MergedSaveMixin, Trainer):
        save_merged = False

    model = get_peft_model(tiny_policy(), LoraConfig(r=2, target_modules=["q_proj"]))
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none")
    AdapterTrainer(model=model, args=args).save_model()
    adapter = tmp_path / "out" / "adapter_model.safetensors"
    assert adapter.stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------------------------------- folder contents
def test_model_save_keeps_foreign_files_and_drops_stale_shards(tmp_path):
    folder = tmp_path / "rm"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "model.safetensors").write_bytes(b"a checkpoint")
    tiny_rm(0).save_pretrained(folder, max_shard_size="4KB")
    assert (folder / "model.safetensors.index.json").is_file()
    new = tiny_rm(1)
    new.save_pretrained(folder)
    names = sorted(p.name for p in folder.iterdir())
    assert not [name for name in names if "-of-" in name or name.endswith("index.json")], names
    assert (folder / "notes.txt").read_text() == "mine"
    assert (folder / "checkpoint-2" / "model.safetensors").read_bytes() == b"a checkpoint"
    assert same_weights(RobustSERForAudioClassification.from_pretrained(folder), new)
    assert leftovers(folder) == []


def test_failing_save_leaves_the_old_model_and_no_temp_files(tmp_path, monkeypatch):
    import transformers.modeling_utils

    folder = tmp_path / "rm"
    old = tiny_rm(0)
    old.save_pretrained(folder)

    def write_half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"x" * 1000)
        raise OSError("No space left on device")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        tiny_rm(1, num_labels=5).save_pretrained(folder)
    assert leftovers(folder) == []
    reloaded = RobustSERForAudioClassification.from_pretrained(folder)
    assert reloaded.config.num_labels == 3 and same_weights(reloaded, old)


# ------------------------------------------------------------------------------------------------ kill tests
KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    import transformers.modeling_utils
    from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification

    folder, seed, kill_at = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.manual_seed(seed)
    config = RobustSERConfig(vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32, max_position_embeddings=32, num_labels=5)
    model = RobustSERForAudioClassification(config).eval()

    if kill_at == "mid_weights":  # SIGKILL-like: no cleanup code runs
        real_save = transformers.modeling_utils.safe_save_file
        def save_half(tensors, filename, metadata=None):
            real_save(tensors, filename, metadata=metadata)
            data = open(filename, "rb").read()
            open(filename, "wb").write(data[: len(data) // 2])
            os._exit(9)
        transformers.modeling_utils.safe_save_file = save_half
    else:  # the n-th rename: 1 = the journal commit, 2 = the first file moved into place, ...
        limit = int(kill_at.split("_")[1])
        real_replace, calls = os.replace, [0]
        def replace(src, dst):
            if os.path.dirname(os.fspath(dst)) == folder:  # not the writes inside the staging folder
                calls[0] += 1
                if calls[0] == limit:
                    os._exit(9)
            real_replace(src, dst)
        os.replace = replace
    model.save_pretrained(folder)
    os._exit(0)
    """
)


def killed_save(folder: Path, seed: int, kill_at: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(folder), str(seed), kill_at], env=env, capture_output=True, text=True
    )
    assert result.returncode == 9, result.stderr[-3000:]


@pytest.mark.parametrize(
    "kill_at, expect",
    [
        ("mid_weights", "old"),  # config.json already written, weights half written
        ("rename_1", "old"),  # everything staged, killed just before the commit
        ("rename_2", "new"),  # committed, killed before the first file moved into place
        ("rename_3", "new"),  # committed, killed between the moves (config.json and weights)
    ],
)
def test_killed_save_leaves_the_old_model_or_the_new_one(tmp_path, kill_at, expect):
    folder = tmp_path / "rm"
    old = tiny_rm(0)
    old.save_pretrained(folder)
    (folder / "notes.txt").write_text("mine")
    killed_save(folder, seed=1, kill_at=kill_at)

    torch.manual_seed(1)
    new = RobustSERForAudioClassification(
        RobustSERConfig(
            vocab_size=16,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
            num_labels=5,
        )
    ).eval()
    reloaded = RobustSERForAudioClassification.from_pretrained(folder)
    wanted = old if expect == "old" else new
    assert reloaded.config.num_labels == wanted.config.num_labels
    assert same_weights(reloaded, wanted)
    assert json.loads((folder / "config.json").read_text())["id2label"] == {
        str(k): v for k, v in wanted.config.id2label.items()
    }
    # The load finished or discarded the interrupted save: no journal, no staging folder, no temp file.
    assert leftovers(folder) == []
    assert (folder / "notes.txt").read_text() == "mine"


def test_killed_save_into_an_empty_folder_leaves_no_large_temp_file(tmp_path):
    folder = tmp_path / "rm"
    killed_save(folder, seed=1, kill_at="mid_weights")
    assert not (folder / "model.safetensors").exists() and not (folder / "config.json").exists()
    recover_interrupted_save(folder)  # what the next save or load does first
    assert list(folder.iterdir()) == []


# ---------------------------------------------------------------------------------------------- bad weights
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_weights_error_names_the_file_and_the_fix(tmp_path):
    from transformers import AutoModelForAudioClassification

    from rrpo_hf.models.cosyvoice2 import CosyVoice2LM

    tiny_rm(0).save_pretrained(tmp_path / "rm")
    tiny_policy().save_pretrained(tmp_path / "policy")
    for folder in ("rm", "policy"):
        truncate(tmp_path / folder / "model.safetensors")
    pattern = r"model\.safetensors \(\d+ bytes\) is incomplete or corrupt .*Save the model again, re-download"
    for load, folder in (
        (RobustSERForAudioClassification.from_pretrained, "rm"),
        (AutoModelForAudioClassification.from_pretrained, "rm"),
        (CosyVoice2LM.from_pretrained, "policy"),
    ):
        with pytest.raises(IncompleteCheckpointError, match=pattern) as raised:
            load(tmp_path / folder)
        assert str(tmp_path / folder / "model.safetensors") in str(raised.value)


def test_truncated_llm_pt_error_names_the_file(tmp_path):
    from rrpo_hf.models.cosyvoice2 import CosyVoice2LM
    from rrpo_hf.models.cosyvoice2.checkpoint import CosyVoiceCheckpointError

    llm_pt = Path(tiny_policy().save_cosyvoice(tmp_path / "release"))
    truncate(llm_pt)
    with pytest.raises(CosyVoiceCheckpointError, match=r"llm\.pt \(\d+ bytes\) is incomplete or corrupt"):
        CosyVoice2LM.from_cosyvoice(tmp_path / "release")
