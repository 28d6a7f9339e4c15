"""Completion tables (`log_completions`, TRL's names): what a row holds against the logged step, the parquet files a
user reloads with `datasets`, evaluation tables, the audio column of a `token2wav`, and TRL's reward log names."""

import glob
import os

import numpy as np
import pytest
import torch
from datasets import load_dataset
from test_diffro_trainer import CODEBOOK, corpus, make_args, make_policy, make_reward_model, tokenizer  # noqa: F401

from rrpo_hf.ops import mixup_emotion_loss
from rrpo_hf.testbed import Oracle, OracleScorer, TestbedConfig
from rrpo_hf.trainers import DiffROTrainer
from rrpo_hf.trainers.completions import CompletionLog, format_tokens


def build(tmp_path, corpus, tokenizer, reward_model, **overrides):  # noqa: F811
    names = ("eval_dataset", "judge_model", "eval_scorers", "token2wav")
    extra = {key: overrides.pop(key) for key in names if key in overrides}
    return DiffROTrainer(
        model=make_policy(tokenizer),
        reward_model=reward_model,
        args=make_args(tmp_path, **{"beta": 0.0, "reward_adv_alpha": 0.0, **overrides}),
        train_dataset=corpus["train"],
        processing_class=tokenizer,
        **extra,
    )


def reload(path):
    return load_dataset("parquet", data_files=str(path), split="train")


def test_a_completion_row_holds_the_logged_steps_per_sample_rewards(tmp_path, corpus, tokenizer):  # noqa: F811
    reward_model = make_reward_model()
    trainer = build(
        tmp_path,
        corpus,
        tokenizer,
        reward_model,
        log_completions=True,
        num_completions_to_print=2,
        judge_model=make_reward_model(seed=5),
        eval_scorers=[OracleScorer(Oracle(TestbedConfig(codebook_size=CODEBOOK)))],
    )
    trainer.train()
    logged = {entry["step"]: entry for entry in trainer.state.log_history if "loss" in entry}
    files = sorted(glob.glob(str(tmp_path / "out" / "completions" / "completions_*.parquet")))
    assert [os.path.basename(f) for f in files] == ["completions_00001.parquet", "completions_00002.parquet"]
    for step, path in zip((1, 2), files):
        table = reload(path)
        entry = logged[step]
        assert len(table) == 4 and set(table["step"]) == {step}
        columns = {"prompt", "target_emotion", "completion", "completion_length", "speech_tokens", "emotion", "reward"}
        assert columns <= set(table.column_names)
        # the step's logged mean and std are those of the rows' per-sample rewards
        rewards = np.array(table["reward"])
        assert entry["reward"] == pytest.approx(rewards.mean(), rel=1e-5)
        assert entry["reward_std"] == pytest.approx(rewards.std(ddof=1), rel=1e-5)
        assert entry["rewards/emotion/mean"] == pytest.approx(rewards.mean(), rel=1e-5)
        assert entry["rm_accuracy"] == pytest.approx(np.mean(table["rm_accuracy"]))
        # each row's reward is the RM's reward of that row's tokens for that row's target emotion
        for row in table:
            ids = torch.tensor([row["speech_tokens"]])
            label = torch.tensor([reward_model.config.label2id[row["target_emotion"]]])
            with torch.no_grad():
                logits = reward_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            expected = -mixup_emotion_loss(logits, label, epsilon=0.1, reduction="none")
            assert row["reward"] == row["emotion"] == pytest.approx(float(expected), abs=1e-4)
            assert row["completion_length"] == len(row["speech_tokens"])
            assert row["completion"] == format_tokens(row["speech_tokens"])
            assert row["prompt"] in corpus["train"]["text"]
        # the scorers ran on the logged samples: judge and oracle columns, one value per row
        assert {"judge_accuracy", "judge_reward", "oracle_cer"} <= set(table.column_names)
        assert all(0 <= value <= 1 for value in table["judge_accuracy"])


def test_evaluation_writes_its_table_with_the_evaluation_metrics(tmp_path, corpus, tokenizer):  # noqa: F811
    reward_model = make_reward_model()
    trainer = build(tmp_path, corpus, tokenizer, reward_model, log_completions=True, eval_dataset=corpus["test"])
    metrics = trainer.evaluate()
    table = reload(tmp_path / "out" / "completions" / "eval_completions_00000.parquet")
    assert len(table) == len(corpus["test"]) == metrics["eval_samples"]
    assert metrics["eval_reward"] == pytest.approx(np.mean(table["reward"]), rel=1e-5)
    assert metrics["eval_rewards/emotion/mean"] == pytest.approx(np.mean(table["emotion"]), rel=1e-5)
    assert metrics["eval_rewards/emotion/std"] == pytest.approx(np.std(table["emotion"], ddof=1), rel=1e-5)
    assert metrics["eval_reward_std"] == pytest.approx(np.std(table["reward"], ddof=1), rel=1e-5)
    assert sorted(table["prompt"]) == sorted(corpus["test"]["text"])
    assert "rm_accuracy" in table.column_names


def test_token2wav_adds_audio_and_logging_changes_no_training(tmp_path, corpus, tokenizer):  # noqa: F811
    from scipy.io import wavfile

    calls = []

    def token2wav(tokens):
        # a vocoder draws noise (CosyVoice's flow does): the training's random state must not move
        calls.append(list(tokens))
        noise = torch.randn(160 * len(tokens)).numpy() * 0.01
        return (np.sin(np.arange(160 * len(tokens)) / 7.0) * 0.5 + noise).astype(np.float32), 16000

    trainer = build(
        tmp_path,
        corpus,
        tokenizer,
        make_reward_model(),
        log_completions=True,
        num_completions_to_print=3,
        token2wav=token2wav,
        judge_model=make_reward_model(seed=5),
    )
    trainer.train()
    judge = make_reward_model(seed=5)
    plain = build(
        tmp_path / "plain", corpus, tokenizer, make_reward_model(), judge_model=judge, eval_dataset=corpus["test"]
    )
    plain.train()
    plain.evaluate()
    # the vocoder and the judge ran on the logged samples, yet the weights are those of a run without tables
    for (name, logged), (_, trained) in zip(trainer.model.named_parameters(), plain.model.named_parameters()):
        assert torch.equal(logged, trained), name
    # without log_completions nothing is written; the logs carry TRL's names, also for a single reward function
    assert not os.path.exists(tmp_path / "plain" / "out" / "completions")
    keys = set().union(*(entry.keys() for entry in plain.state.log_history))
    assert {"reward", "reward_std", "rewards/emotion/mean", "rewards/emotion/std", "eval_rewards/emotion/mean"} <= keys
    assert not any(key.startswith(("reward/", "eval_reward/")) for key in keys)
    folder = tmp_path / "out" / "completions"
    table = reload(folder / "completions_00001.parquet")
    assert table["audio"][3] is None and len(calls) == 6  # 3 rows, 2 steps
    for row, tokens in zip(table.select(range(3)), calls[:3]):
        assert row["speech_tokens"] == tokens
        rate, pcm = wavfile.read(folder / row["audio"])
        assert rate == 16000 and pcm.shape == (160 * len(tokens),)


def test_completion_log_keeps_the_newest_rows_and_only_on_the_main_process(tmp_path):
    log = CompletionLog(tmp_path, max_rows=2, num_completions_to_print=1)
    log.add([{"prompt": str(i), "target_emotion": "sad", "completion": "", "completion_length": 0} for i in range(3)])
    path = log.flush(step=7)
    assert reload(path)["prompt"] == ["1", "2"] and len(log) == 0 and log.flush(step=8) is None
    other = CompletionLog(tmp_path / "other", is_main_process=False)
    other.add([{"prompt": "x"}])
    assert len(other) == 0 and other.flush(step=1) is None and not os.path.exists(tmp_path / "other")
    with pytest.raises(ValueError, match="num_completions_to_print"):
        CompletionLog(tmp_path, num_completions_to_print=0)


def test_the_table_goes_to_a_running_wandb_with_trls_name_and_the_rows(tmp_path, monkeypatch):
    """The wandb path without wandb installed: a stand-in module with a running `run` records what is logged."""
    import sys
    import types

    logged = []
    fake = types.ModuleType("wandb")
    fake.run = object()
    fake.Table = lambda dataframe: ("table", dataframe)
    fake.Audio = lambda waveform, sample_rate: ("audio", len(waveform), sample_rate)
    fake.log = logged.append
    monkeypatch.setitem(sys.modules, "wandb", fake)
    rows = [
        {"prompt": "a b", "target_emotion": "angry", "completion": "1 2", "completion_length": 2, "reward": -0.5},
        {"prompt": "c", "target_emotion": "sad", "completion": "3", "completion_length": 1, "reward": -1.5},
    ]
    log = CompletionLog(tmp_path, report_to=["wandb"], token2wav=lambda tokens: (np.zeros(160), 16000))
    log.write([{**row, "speech_tokens": [1, 2]} for row in rows], step=3, prefix="eval")
    assert len(logged) == 1 and list(logged[0]) == ["eval_completions"]
    kind, frame = logged[0]["eval_completions"]
    assert kind == "table" and "speech_tokens" not in frame.columns
    assert list(frame["reward"]) == [-0.5, -1.5] and list(frame["step"]) == [3, 3]
    assert list(frame["audio"]) == [("audio", 160, 16000)] * 2
    # No run started (wandb.init not called): nothing is logged, the parquet file is still written.
    fake.run = None
    path = CompletionLog(tmp_path / "b", report_to=["wandb"]).write(rows, step=4)
    assert len(logged) == 1 and os.path.exists(path)
