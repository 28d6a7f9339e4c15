"""Noisy labels in a testbed corpus (a large pseudo-labelled corpus): the speech keeps the true emotion, only the
train labels are wrong, at the asked rate, and the default corpus does not change."""

import numpy as np
import pytest

from rrpo_hf.testbed import Oracle, make_emotion_corpus


def test_noisy_labels_corrupt_only_train_labels_at_the_asked_rate():
    clean = make_emotion_corpus(num_train=1200, num_test=120, seed=3)
    noisy = make_emotion_corpus(num_train=1200, num_test=120, seed=3, label_noise=0.3)
    for split in ("train", "test"):
        assert noisy[split]["speech_tokens"] == clean[split]["speech_tokens"]  # same speech, same texts
        assert noisy[split]["text"] == clean[split]["text"]
        assert noisy[split]["true_emotion"] == clean[split]["emotion"]
    assert noisy["test"]["emotion"] == clean["test"]["emotion"]  # evaluation labels stay clean
    labels, truth = np.array(noisy["train"]["emotion"]), np.array(noisy["train"]["true_emotion"])
    flipped = labels != truth
    # 1200 Bernoulli(0.3) draws: the flipped fraction lies within 5 standard deviations of 0.3
    assert abs(flipped.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / 1200)
    # a wrong label is any of the other five emotions, about equally often
    offsets = ((labels - truth) % 6)[flipped]
    assert set(offsets.tolist()) == {1, 2, 3, 4, 5}
    oracle = Oracle()
    rows = noisy["train"]
    true_scores = oracle.score(rows["text"], rows["speech_tokens"], rows["true_emotion"])
    noisy_scores = oracle.score(rows["text"], rows["speech_tokens"], rows["emotion"])
    assert true_scores["emotion_correct"].mean() == 1.0
    assert noisy_scores["emotion_correct"].mean() == pytest.approx(1.0 - flipped.mean())


def test_no_label_noise_means_no_extra_column_and_the_same_corpus():
    default = make_emotion_corpus(num_train=40, num_test=10, seed=1)
    explicit = make_emotion_corpus(num_train=40, num_test=10, seed=1, label_noise=0.0)
    assert "true_emotion" not in default["train"].column_names
    assert explicit["train"].to_dict() == default["train"].to_dict()


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_label_noise_outside_the_unit_interval_fails_clearly(rate):
    with pytest.raises(ValueError, match="label_noise must be in"):
        make_emotion_corpus(num_train=10, num_test=0, label_noise=rate)
