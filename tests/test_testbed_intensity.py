"""Emotion intensity in the testbed world: the rendering rule, the corpus option and what the oracle makes of it."""

import hashlib

import numpy as np
import pytest

from rrpo_hf.data.labels import CANONICAL_EMOTIONS
from rrpo_hf.testbed import (
    EMOTION_PROSODY,
    TESTBED_LANGUAGES,
    EmotionWorld,
    Oracle,
    TestbedConfig,
    make_emotion_corpus,
)


#: sha256 of the tokens (and texts, emotions, speakers) of these corpora, recorded on the code *before*
#: intensities existed (commit 500f76b). Default corpora, and so every seeded study, must not move.
RECORDED_CORPORA = [
    (
        dict(language="alpha", num_train=120, num_test=60, seed=0),
        "73c5c9a3b97c3a93ac8b400d82c063e1f79f8f4691a2c31c3fa62133dc3c5bb1",
    ),
    (
        dict(language="beta", num_train=90, num_test=30, seed=3, spurious_artifact_rate=0.9),
        "32679ae95bebc2c600bfc6ad2f61d7e5f4d637e20115111c25b8f91972a5a5e8",
    ),
    (
        dict(
            language="alpha",
            num_train=60,
            num_test=12,
            seed=1,
            world=TestbedConfig(seed=2, stress_period=2, accent_lengthening=2),
        ),
        "4c46f186c96cd082f4eede16d87326106cd3a2b4821d2ae03bcf79023bc390dc",
    ),
]
RECORDED_SYNTHESIS = "3514a390d9406fe2fa6aad60f7b0c9be9390eb58afd450c65420f39d5bdb7556"
ACCENTED = [e for e in CANONICAL_EMOTIONS if EMOTION_PROSODY[e].accent]
NON_NEUTRAL = [e for e in CANONICAL_EMOTIONS if e != "neutral"]


def corpus_digest(corpus) -> str:
    digest = hashlib.sha256()
    for split in ("train", "test"):
        for row in corpus[split]:
            digest.update(np.asarray(row["speech_tokens"], dtype=np.int64).tobytes())
            digest.update(f"|{row['text']}|{row['emotion']}|{row['speaker']};".encode())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def world():
    return EmotionWorld()


@pytest.fixture(scope="module")
def oracle(world):
    return Oracle(world)


def score_at(oracle, world, language, intensity, num=600, seed=0):
    """Oracle scores of ``num`` balanced test utterances rendered at ``intensity`` (same texts for every value)."""
    split = make_emotion_corpus(language, num_train=0, num_test=num, seed=seed, world=world, intensity=intensity)
    split = split["test"]
    scores = oracle.score(split["text"], split["speech_tokens"], split["emotion"], language)
    return scores, np.array(split["emotion"])


@pytest.mark.parametrize("kwargs, expected", RECORDED_CORPORA)
@pytest.mark.parametrize("intensity", [None, 1.0, 1, (1.0, 1.0)])
def test_default_intensity_reproduces_the_recorded_corpora(kwargs, expected, intensity):
    if intensity is not None:
        kwargs = {**kwargs, "intensity": intensity}
    corpus = make_emotion_corpus(**kwargs)
    assert corpus_digest(corpus) == expected
    assert "intensity" not in corpus["train"].column_names  # default corpora keep their schema


def test_synthesize_at_intensity_one_matches_the_recorded_tokens(world):
    texts, emotions = ["a e i o u p t", "t k m"], ["surprised", "fearful"]
    for intensities in (None, 1.0, [1.0, 1.0]):
        tokens = world.synthesize(texts, emotions, seed=5, intensities=intensities)
        flat = np.asarray(tokens[0] + [-1] + tokens[1], dtype=np.int64)
        assert hashlib.sha256(flat.tobytes()).hexdigest() == RECORDED_SYNTHESIS


def test_natural_speech_still_scores_as_natural(world, oracle):
    for language in TESTBED_LANGUAGES:
        scores, _ = score_at(oracle, world, language, 1.0, num=500)
        assert scores["emotion_correct"].mean() == 1.0
        assert scores["cer"].max() == 0.0
        assert scores["naturalness"].mean() > 4.65


def test_rendering_rule_on_hand_built_utterances():
    # no jitter and one timbre variant: token counts and banks follow the rule exactly
    world = EmotionWorld(duration_jitter=0.0, variants_per_unit=1)
    text = "a e i o u p t k m"  # 9 phonemes, stressed at positions 0, 3, 6
    length, motif = 9, 3

    def banks(emotion, intensity):
        tokens = world.synthesize([text], [emotion], seed=11, intensities=intensity)[0]
        return world.decompose(np.array(tokens))[0]

    natural = banks("sad", 1.0)
    assert len(natural) == length * motif * 2 and set(natural) == {0}
    # s = 0: every cue is off -> the neutral rendering, whatever the emotion
    for emotion in CANONICAL_EMOTIONS:
        zero = banks(emotion, 0.0)
        assert len(zero) == length * motif and set(zero) == {1}, emotion
    # angry at s = 1: one accented onset (bank 2, 1 + accent_lengthening tokens) per stressed phoneme
    angry = banks("angry", 1.0)
    assert (angry == 2).sum() == 3 * 2 and len(angry) == length * motif + 3
    # angry at s = 2: every phoneme accented, also the unstressed ones natural speech never accents
    exaggerated = banks("angry", 2.0)
    assert (exaggerated == 2).sum() == length * 2 and len(exaggerated) == length * motif + length
    # happy has no accent: exaggeration has nothing to push past natural levels
    assert np.array_equal(banks("happy", 3.0), banks("happy", 1.0))


def test_partial_intensity_mixes_full_and_neutral_phonemes():
    world = EmotionWorld(duration_jitter=0.0, variants_per_unit=1)
    num = 400
    rng = np.random.default_rng(0)
    phonemes = world.sample_texts(num, "alpha", rng)
    sad = CANONICAL_EMOTIONS.index("sad")
    tokens = world.render(phonemes, [sad] * num, "alpha", np.zeros(num, int), rng, np.full(num, 0.4))
    flat = np.concatenate(tokens)
    bank = world.decompose(flat)[0]
    # per phoneme, independently with probability 0.4: sad's low register (else mid) and its double duration (else 1)
    units = sum(len(p) for p in phonemes) * 3
    assert set(bank) == {0, 1}
    assert abs(flat.size / (units * (0.4 * 2 + 0.6)) - 1.0) < 0.03
    assert abs(np.mean(bank == 0) - 0.4) < 0.03


@pytest.mark.parametrize("language", TESTBED_LANGUAGES)
def test_more_intensity_gives_a_higher_emotion_score(world, oracle, language):
    means = {}
    for intensity in (0.3, 0.6, 1.0):
        scores, emotions = score_at(oracle, world, language, intensity)
        means[intensity] = {e: scores["emotion_score"][emotions == i].mean() for i, e in enumerate(CANONICAL_EMOTIONS)}
    for emotion in NON_NEUTRAL:
        low, mid, full = (means[s][emotion] for s in (0.3, 0.6, 1.0))
        assert low + 0.2 < mid < full - 0.2, (emotion, low, mid, full)
    assert means[1.0]["sad"] > 4.9 and means[0.3]["sad"] < 1.5


@pytest.mark.parametrize("language, min_accuracy", [("alpha", 0.95), ("beta", 0.8)])
def test_exaggeration_lowers_naturalness_and_keeps_the_emotion(world, oracle, language, min_accuracy):
    natural, emotions = score_at(oracle, world, language, 1.0)
    exaggerated, same_emotions = score_at(oracle, world, language, 2.0)
    assert np.array_equal(emotions, same_emotions)
    for emotion in ACCENTED:
        mask = emotions == CANONICAL_EMOTIONS.index(emotion)
        assert exaggerated["naturalness"][mask].mean() < natural["naturalness"][mask].mean() - 2.0, emotion
    assert exaggerated["naturalness"].mean() < natural["naturalness"].mean() - 1.0
    assert exaggerated["emotion_correct"].mean() >= min_accuracy
    assert exaggerated["cer"].max() == 0.0  # exaggeration changes prosody, not content


def test_intensity_column_only_when_set(world):
    default = make_emotion_corpus(num_train=12, num_test=6, world=world)
    constant = make_emotion_corpus(num_train=12, num_test=6, world=world, intensity=0.5)
    ranged = make_emotion_corpus(num_train=300, num_test=6, world=world, intensity=(0.2, 0.8))
    assert "intensity" not in default["train"].column_names
    assert constant["train"]["intensity"] == [0.5] * 12 and constant["test"]["intensity"] == [0.5] * 6
    values = np.array(ranged["train"]["intensity"])
    assert values.min() >= 0.2 and values.max() <= 0.8 and values.std() > 0.1
    # intensity changes how things are said, not what, by whom or with which emotion
    for split in ("train", "test"):
        for column in ("text", "emotion", "speaker"):
            assert constant[split][column] == default[split][column]
    assert constant["train"]["speech_tokens"] != default["train"]["speech_tokens"]
    # seeded like everything else
    again = make_emotion_corpus(num_train=300, num_test=6, world=world, intensity=(0.2, 0.8))
    assert again["train"]["intensity"] == ranged["train"]["intensity"]
    assert again["train"]["speech_tokens"] == ranged["train"]["speech_tokens"]


@pytest.mark.parametrize(
    "intensity, message",
    [(-0.5, ">= 0"), ((0.8, 0.2), "low <= high"), ((-1.0, 0.5), ">= 0"), (float("nan"), "finite"), ("x", "pair")],
)
def test_invalid_corpus_intensity_fails_clearly(world, intensity, message):
    with pytest.raises(ValueError, match=message):
        make_emotion_corpus(num_train=4, num_test=2, world=world, intensity=intensity)


def test_invalid_render_intensities_fail_clearly(world):
    with pytest.raises(ValueError, match="utterance 1"):
        world.synthesize(["a e", "i o"], ["sad", "sad"], intensities=[1.0, -0.1])
    with pytest.raises(ValueError, match="one emotion intensity per utterance"):
        world.synthesize(["a e", "i o"], ["sad", "sad"], intensities=[1.0, 0.5, 0.2])


@pytest.mark.parametrize("language", TESTBED_LANGUAGES)
def test_plausible_intensities_make_mild_speech_natural_and_keep_the_emotion_truth(world, oracle, language):
    """With every natural strength plausible, weakly expressed speech is natural speech with less emotion (the
    headroom a policy can genuinely gain), full-strength speech is unchanged and exaggeration stays implausible."""
    from rrpo_hf.testbed import OracleConfig

    relaxed = Oracle(world, OracleConfig(plausible_intensities=[i / 10 for i in range(11)]))
    for intensity in (0.3, 0.6):
        strict_scores, _ = score_at(oracle, world, language, intensity)
        relaxed_scores, _ = score_at(relaxed, world, language, intensity)
        assert strict_scores["naturalness"].mean() < 3.0 < 3.8 < relaxed_scores["naturalness"].mean()
        np.testing.assert_array_equal(relaxed_scores["emotion_score"], strict_scores["emotion_score"])
        assert relaxed_scores["emotion_score"].mean() < 4.0
    full, _ = score_at(relaxed, world, language, 1.0)
    exaggerated, _ = score_at(relaxed, world, language, 2.0)
    assert full["naturalness"].mean() > 4.6
    assert exaggerated["naturalness"].mean() < full["naturalness"].mean() - 1.0


@pytest.mark.parametrize("values", [[], [1.5], [-0.1, 1.0]])
def test_plausible_intensities_must_lie_in_the_unit_interval(values):
    from rrpo_hf.testbed import OracleConfig

    with pytest.raises(ValueError, match="plausible_intensities"):
        OracleConfig(plausible_intensities=values)


def test_gold_score_is_the_geometric_mean_of_emotion_and_naturalness(world, oracle):
    """Naturalness alone (neutral speech for an angry target) does not buy it."""
    scores, _ = score_at(oracle, world, "alpha", 1.0)
    np.testing.assert_allclose(scores["gold_score"], np.sqrt(scores["emotion_score"] * scores["naturalness"]))
    neutral = world.synthesize(["a e i o"] * 20, ["neutral"] * 20, seed=0)
    as_angry = oracle.score(["a e i o"] * 20, neutral, ["angry"] * 20, "alpha")
    angry = oracle.score(["a e i o"] * 20, world.synthesize(["a e i o"] * 20, ["angry"] * 20, seed=0), ["angry"] * 20)
    assert as_angry["naturalness"].mean() > 4.5 and as_angry["gold_score"].mean() < angry["gold_score"].mean() - 1.0
