"""Evaluation scorers: DiffROTrainer(eval_scorers=...) logs what any scorer returns; the judge and the oracle are
scorers like any other (their `judge_model=` / `oracle=` conveniences give the same metrics)."""

import copy

import numpy as np
import pytest
import torch
from test_diffro_trainer import CODEBOOK, corpus, make_args, make_policy, make_reward_model, tokenizer  # noqa: F401

from rrpo_hf.data.labels import CANONICAL_EMOTIONS, UnknownEmotionError, emotion_label_maps
from rrpo_hf.evaluation import EmotionClassifierScorer
from rrpo_hf.testbed import ORACLE_EVAL_KEYS, Oracle, OracleScorer, TestbedConfig
from rrpo_hf.trainers import DiffROTrainer


class RecordingScorer:
    """Returns the mean token id per sample and keeps what it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, tokens, batch):
        self.calls.append((copy.deepcopy(tokens), {key: batch[key] for key in ("texts", "target_emotions")}))
        return {"mean_token_id": [float(np.mean(sample)) for sample in tokens]}


def build(tmp_path, corpus, tokenizer, **kwargs):  # noqa: F811
    return DiffROTrainer(
        model=make_policy(tokenizer),
        reward_model=make_reward_model(),
        args=make_args(tmp_path),
        train_dataset=corpus["train"],
        eval_dataset=corpus["test"],
        processing_class=tokenizer,
        **kwargs,
    )


def test_a_user_scorer_is_called_on_the_generated_tokens_and_logged_as_a_mean(tmp_path, corpus, tokenizer):  # noqa: F811
    scorer = RecordingScorer()
    metrics = build(tmp_path, corpus, tokenizer, eval_scorers=[scorer]).evaluate()
    samples = [tokens for call_tokens, _ in scorer.calls for tokens in call_tokens]
    assert len(samples) == len(corpus["test"]) == metrics["eval_samples"]
    assert metrics["eval_mean_token_id"] == pytest.approx(np.mean([np.mean(tokens) for tokens in samples]), rel=1e-6)
    assert metrics["eval_sample_length"] == pytest.approx(np.mean([len(tokens) for tokens in samples]))
    texts = [text for _, batch in scorer.calls for text in batch["texts"]]
    assert texts == list(corpus["test"]["text"])
    names = corpus["test"].features["emotion"].names
    targets = [emotion for _, batch in scorer.calls for emotion in batch["target_emotions"]]
    assert targets == [names[i] for i in corpus["test"]["emotion"]]


def test_the_judge_convenience_equals_the_explicit_scorer(tmp_path, corpus, tokenizer):  # noqa: F811
    judge, oracle = make_reward_model(seed=5), Oracle(TestbedConfig(codebook_size=CODEBOOK))
    convenient = build(
        tmp_path / "a", corpus, tokenizer, judge_model=copy.deepcopy(judge), eval_scorers=[OracleScorer(oracle)]
    )
    # The convenience smooths the judge's cross-entropy like the training reward's (its RM's own ε here).
    smoothing = convenient.emotion_reward.label_smoothing
    convenient = convenient.evaluate()
    scorers = [EmotionClassifierScorer(judge.eval(), label_smoothing=smoothing), OracleScorer(oracle)]
    explicit = build(tmp_path / "b", corpus, tokenizer, eval_scorers=scorers).evaluate()
    keys = ["eval_judge_reward", "eval_judge_accuracy"] + [f"eval_oracle_{key}" for key in ORACLE_EVAL_KEYS]
    for key in keys + ["eval_reward", "eval_rm_accuracy"]:
        assert convenient[key] == pytest.approx(explicit[key], rel=1e-6), key


def test_oracle_scorer_reports_the_oracles_per_sample_scores(corpus):  # noqa: F811
    oracle = Oracle(TestbedConfig(codebook_size=CODEBOOK))
    rows = corpus["test"].select(range(4))
    names = rows.features["emotion"].names
    batch = {"texts": rows["text"], "target_emotions": [names[i] for i in rows["emotion"]]}
    scores = OracleScorer(oracle)(rows["speech_tokens"], batch)
    expected = oracle.score(batch["texts"], rows["speech_tokens"], batch["target_emotions"])
    assert list(scores) == [f"oracle_{key}" for key in ORACLE_EVAL_KEYS]
    for key in ORACLE_EVAL_KEYS:
        np.testing.assert_allclose(scores[f"oracle_{key}"], np.asarray(expected[key], dtype=np.float32))


def test_judge_reads_targets_through_its_own_label_order(corpus):  # noqa: F811
    judge = make_reward_model(seed=5).eval()
    # The same classifier with its labels listed in reverse: output rows and label ids permuted together.
    reversed_judge = copy.deepcopy(judge)
    order = list(reversed(range(len(CANONICAL_EMOTIONS))))
    with torch.no_grad():
        reversed_judge.classifier.weight.copy_(judge.classifier.weight[order])
        reversed_judge.classifier.bias.copy_(judge.classifier.bias[order])
    reversed_judge.config.id2label, reversed_judge.config.label2id = emotion_label_maps(
        [CANONICAL_EMOTIONS[i] for i in order]
    )
    rows = corpus["test"]
    names = rows.features["emotion"].names
    batch = {"target_emotions": [names[i] for i in rows["emotion"]]}
    plain = EmotionClassifierScorer(judge)(rows["speech_tokens"], batch)
    permuted = EmotionClassifierScorer(reversed_judge)(rows["speech_tokens"], batch)
    for key in ("judge_reward", "judge_accuracy"):
        torch.testing.assert_close(plain[key], permuted[key])
    with pytest.raises(UnknownEmotionError, match="no label for target emotion"):
        EmotionClassifierScorer(make_reward_model(emotions=["happy", "sad"]))(
            rows["speech_tokens"][:1], {"target_emotions": ["angry"]}
        )


def test_bad_scorers_fail_with_a_message_naming_them(tmp_path, corpus, tokenizer):  # noqa: F811
    with pytest.raises(TypeError, match="eval_scorers must be callables"):
        build(tmp_path, corpus, tokenizer, eval_scorers=["oracle"])
    clash = build(tmp_path, corpus, tokenizer, eval_scorers=[lambda tokens, batch: {"reward": [0.0] * len(tokens)}])
    with pytest.raises(ValueError, match="Two evaluation scores are named 'reward'"):
        clash.evaluate()
    short = build(tmp_path, corpus, tokenizer, eval_scorers=[lambda tokens, batch: {"score": [0.0]}])
    with pytest.raises(ValueError, match="values for 'score'.*per sample"):
        short.evaluate()
