"""Two DiffRO steps with `report_to=["trackio"]` and completion tables, then the run read back from trackio's local
store (`TRACKIO_DIR`, set by the caller): prints the logged rows as JSON (tests/test_trackio.py)."""

import json
import sys

from test_diffro_trainer import CODEBOOK, make_args, make_policy, make_reward_model

from rrpo_hf.testbed import build_testbed_tokenizer, make_emotion_corpus
from rrpo_hf.trainers import DiffROTrainer


def main(output_dir: str) -> None:
    corpus = make_emotion_corpus(language="alpha", num_train=16, num_test=4, codebook_size=CODEBOOK, seed=0)
    tokenizer = build_testbed_tokenizer()
    args = make_args(
        _Path(output_dir),
        beta=0.0,
        report_to=["trackio"],
        project="rrpo-trackio-test",
        run_name="two-steps",
        trackio_static_space_id=False,
        log_completions=True,
        num_completions_to_print=1,
        disable_tqdm=True,
    )
    trainer = DiffROTrainer(
        model=make_policy(tokenizer),
        reward_model=make_reward_model(),
        args=args,
        train_dataset=corpus["train"],
        eval_dataset=corpus["test"],
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.evaluate()
    import trackio
    from trackio.sqlite_storage import SQLiteStorage

    trackio.finish()
    logs = SQLiteStorage.get_logs("rrpo-trackio-test", "two-steps")
    print("TRACKIO_LOGS " + json.dumps(logs, default=str))


class _Path(str):
    """`make_args` joins `tmp_path / "out"`."""

    def __truediv__(self, name):
        return f"{self}/{name}"


if __name__ == "__main__":
    main(sys.argv[1])
