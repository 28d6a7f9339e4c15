"""The plumbing the rrpo-hf trainers share: their own random streams survive a checkpoint, and logs average."""

import logging

import torch
from transformers import Trainer, TrainingArguments

from rrpo_hf.trainers.base import _BaseTrainer


class StreamTrainer(_BaseTrainer, Trainer):
    _extra_state_name = "stream_state"
    _extra_state_missing = "the stream restarts from its seed."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stream = torch.Generator().manual_seed(0)

    def _extra_checkpoint_state(self):
        return {"stream": self.stream.get_state()}

    def _restore_extra_checkpoint_state(self, state):
        self.stream.set_state(state["stream"])


def make_trainer(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none")
    return StreamTrainer(model=torch.nn.Linear(2, 2), args=args)


def test_extra_state_round_trips_through_a_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path)
    torch.rand(3, generator=trainer.stream)
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    trainer._save_rng_state(str(checkpoint))
    assert (checkpoint / "stream_state_0.pth").is_file() and (checkpoint / "rng_state.pth").is_file()
    expected = torch.rand(4, generator=trainer.stream)

    resumed = make_trainer(tmp_path)
    resumed._load_extra_checkpoint_state(str(checkpoint))
    assert torch.equal(torch.rand(4, generator=resumed.stream), expected)


def test_missing_extra_state_warns_and_keeps_the_seeded_stream(tmp_path, caplog):
    trainer = make_trainer(tmp_path)
    fresh = torch.Generator().manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="rrpo_hf.trainers.base"):
        trainer._load_extra_checkpoint_state(str(tmp_path))
        trainer._load_extra_checkpoint_state(None)  # not resuming: nothing to load, no warning
    assert [record.getMessage() for record in caplog.records] == [
        f"{tmp_path / 'stream_state_0.pth'} not found: the stream restarts from its seed."
    ]
    assert torch.equal(torch.rand(2, generator=trainer.stream), torch.rand(2, generator=fresh))


def test_training_logs_average_the_step_statistics_of_the_window(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer._metrics["loss_emo"] += [1.0, 2.0]
    logs = {"loss": 0.5}
    trainer.log(logs)
    assert logs["loss_emo"] == 1.5 and not trainer._metrics
    trainer._metrics["loss_emo"].append(4.0)
    eval_logs = {"eval_loss": 0.1}
    trainer.log(eval_logs)  # evaluation logs leave the training window alone
    assert "loss_emo" not in eval_logs and trainer._metrics["loss_emo"] == [4.0]
