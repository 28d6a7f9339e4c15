"""One rule maps dataset emotions onto a classifier's labels, in the reward-model and the DiffRO trainers alike."""

import pytest

from rrpo_hf.data.labels import emotion_key, emotion_label_ids


def test_emotion_key_is_the_canonical_name_else_the_label_as_written():
    assert emotion_key("Surprise") == emotion_key("sur") == "surprised"
    assert emotion_key(" HAP ") == emotion_key("exc") == "happy"
    assert emotion_key("LABEL_3") == "LABEL_3"  # no known emotion: matches itself exactly
    assert emotion_key("Bored") == "Bored" and emotion_key("bored") != "Bored"


def test_label_ids_map_every_spelling_of_a_models_labels():
    lookup = emotion_label_ids({0: "Neutral", 1: "hap", 2: "Sad", 3: "bored"})
    assert lookup == {"neutral": 0, "happy": 1, "sad": 2, "bored": 3}
    # Any alias on the dataset side reaches the same id.
    names = ("neu", "joy", "sadness", "bored", "angry")
    assert [lookup.get(emotion_key(name)) for name in names] == [0, 1, 2, 3, None]


def test_label_ids_accept_json_string_keys():
    assert emotion_label_ids({"1": "sad", "0": "happy"}) == {"happy": 0, "sad": 1}


def test_two_labels_with_one_emotion_are_an_error():
    with pytest.raises(ValueError, match=r"'hap' \(id 0\) and 'exc' \(id 2\) both mean the emotion 'happy'"):
        emotion_label_ids({0: "hap", 1: "sad", 2: "exc"})
