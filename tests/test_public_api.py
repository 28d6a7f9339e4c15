"""The top-level API: TRL-style `from rrpo_hf import XConfig, XTrainer`, resolved lazily."""

import subprocess
import sys

import pytest

import rrpo_hf


@pytest.mark.parametrize("name", sorted(rrpo_hf._NAME_TO_MODULE))
def test_every_public_name_resolves_to_its_submodule_object(name):
    import importlib

    module = importlib.import_module(f"rrpo_hf.{rrpo_hf._NAME_TO_MODULE[name]}")
    assert getattr(rrpo_hf, name) is getattr(module, name)


def test_trl_style_imports():
    from rrpo_hf import DiffROConfig, DiffROTrainer, RobustRewardConfig, RobustRewardTrainer, make_emotion_corpus

    assert issubclass(DiffROTrainer, __import__("transformers").Trainer)
    assert DiffROConfig.__name__ == "DiffROConfig" and RobustRewardConfig.__name__ == "RobustRewardConfig"
    assert RobustRewardTrainer.__module__ == "rrpo_hf.trainers.robust_reward_trainer"
    assert callable(make_emotion_corpus)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        rrpo_hf.NotAThing  # noqa: B018
    assert "DiffROTrainer" in dir(rrpo_hf) and "DiffROTrainer" in rrpo_hf.__all__


def test_import_is_lazy():
    """`import rrpo_hf` must not pull torch / transformers in; the first trainer access does."""
    code = (
        "import sys, rrpo_hf; assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'eager'; "
        "rrpo_hf.DiffROConfig; assert 'transformers' in sys.modules; print(rrpo_hf.__version__)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == rrpo_hf.__version__
