"""Fast tests of the reward-hacking testbed: generator, perturbations and oracle scorers."""

import time

import numpy as np
import pytest
from datasets import ClassLabel

from rrpo_hf.data.labels import CANONICAL_EMOTIONS, UnknownEmotionError
from rrpo_hf.testbed import (
    EMOTION_PROSODY,
    SCORE_KEYS,
    TESTBED_LANGUAGES,
    EmotionWorld,
    Oracle,
    TestbedConfig,
    batched_levenshtein,
    insert_artifacts,
    make_emotion_corpus,
    repeat_tokens,
    substitute_tokens,
)


@pytest.fixture(scope="module")
def world():
    return EmotionWorld()


@pytest.fixture(scope="module")
def oracle(world):
    return Oracle(world)


@pytest.fixture(scope="module", params=TESTBED_LANGUAGES)
def corpus(request, world):
    return make_emotion_corpus(language=request.param, num_train=600, num_test=120, world=world, seed=3)


def test_schema_and_labels(corpus, world):
    assert set(corpus) == {"train", "test"}
    assert corpus["train"].num_rows == 600 and corpus["test"].num_rows == 120
    features = corpus["train"].features
    assert isinstance(features["emotion"], ClassLabel)
    assert features["emotion"].names == list(CANONICAL_EMOTIONS)
    assert set(features) == {"text", "speech_tokens", "emotion", "language", "speaker", "corpus"}
    row = corpus["train"][0]
    language = row["language"]
    assert language in TESTBED_LANGUAGES and row["corpus"] == f"testbed-{language}"
    assert row["speaker"].startswith(f"{language}_spk")
    assert set(row["text"].split()) <= set(world.phoneme_inventory(language))
    flat = np.concatenate([np.asarray(t) for t in corpus["train"]["speech_tokens"]])
    assert flat.min() >= 0 and flat.max() < world.first_artifact_id  # natural speech: no artifact ids
    # balanced emotions
    counts = np.bincount(corpus["train"]["emotion"], minlength=6)
    assert counts.min() == counts.max() == 100


def test_deterministic_given_seed():
    first = make_emotion_corpus(num_train=50, num_test=20, seed=7, spurious_artifact_rate=0.5)
    second = make_emotion_corpus(num_train=50, num_test=20, seed=7, spurious_artifact_rate=0.5)
    other = make_emotion_corpus(num_train=50, num_test=20, seed=8, spurious_artifact_rate=0.5)
    for split in ("train", "test"):
        assert first[split].to_dict() == second[split].to_dict()
    assert list(first["train"]["speech_tokens"]) != list(other["train"]["speech_tokens"])
    # the test split does not depend on the size of the train split
    bigger = make_emotion_corpus(num_train=80, num_test=20, seed=7)
    assert bigger["test"].to_dict() == make_emotion_corpus(num_train=10, num_test=20, seed=7)["test"].to_dict()


def test_languages_differ_in_inventory_and_motifs(world):
    alpha, beta = world.motifs("alpha"), world.motifs("beta")
    assert not set(alpha) & set(beta)
    assert {len(m) for m in alpha.values()} != {len(m) for m in beta.values()}
    alpha_units = {u for m in alpha.values() for u in m}
    beta_units = {u for m in beta.values() for u in m}
    shared = alpha_units & beta_units
    assert 0 < len(shared) < min(len(alpha_units), len(beta_units))
    # within a language each unit belongs to exactly one phoneme (content is decodable)
    assert len(alpha_units) == sum(len(m) for m in alpha.values())


def test_no_single_token_identifies_the_emotion(world):
    # every register bank is produced by at least two emotions (base register or accent)
    producers = {bank: set() for bank in range(3)}
    for name, rule in EMOTION_PROSODY.items():
        producers[rule.register].add(name)
        if rule.accent:
            producers[(rule.register + 1) % 3].add(name)
    assert all(len(names) >= 2 for names in producers.values())
    # and the emotions are still distinct as a whole
    assert len(set(EMOTION_PROSODY.values())) == len(CANONICAL_EMOTIONS)


def test_prosody_rules_are_rendered(world):
    text = "a e i o u p"
    tokens = world.synthesize([text] * 6, list(CANONICAL_EMOTIONS), language="alpha", seed=0)
    by_emotion = dict(zip(CANONICAL_EMOTIONS, tokens))
    banks = {name: np.bincount(world.decompose(t)[0], minlength=3) for name, t in by_emotion.items()}
    assert banks["neutral"][1] == len(by_emotion["neutral"])  # all mid register
    assert banks["angry"][2] > 0 and banks["angry"][1] > banks["angry"][2]  # mid with high accents
    assert banks["sad"][0] == len(by_emotion["sad"])
    # slow emotions are about twice as long as their fast register mates
    assert len(by_emotion["sad"]) >= 1.8 * len(by_emotion["neutral"])


def test_codebook_sizes(oracle):
    big = EmotionWorld(codebook_size=6561)
    corpus = make_emotion_corpus(num_train=60, num_test=6, world=big)
    flat = np.concatenate([np.asarray(t) for t in corpus["train"]["speech_tokens"]])
    assert flat.max() < 6561 and flat.max() > 512  # uses the whole codebook, not only the first ids
    assert list(big.artifact_token_ids) == list(range(6561 - 16, 6561))
    summary = Oracle(big).summarize(
        corpus["train"]["text"], corpus["train"]["speech_tokens"], corpus["train"]["emotion"]
    )
    assert summary["emotion_correct"] >= 0.95 and summary["cer"] == 0.0
    with pytest.raises(ValueError, match="Increase codebook_size"):
        TestbedConfig(codebook_size=64)


def test_oracle_on_natural_speech(oracle, corpus):
    test = corpus["test"]
    scores = oracle.score(test["text"], test["speech_tokens"], test["emotion"])
    for key in SCORE_KEYS + ("emotion_probs", "emotion_pred"):
        assert len(scores[key]) == test.num_rows
    assert scores["emotion_correct"].mean() >= 0.95
    np.testing.assert_allclose(scores["emotion_probs"].sum(1), 1.0, rtol=1e-9)
    assert scores["cer"].max() <= 0.02
    assert scores["artifact_rate"].max() == 0.0
    assert scores["naturalness"].mean() >= 4.5 and scores["naturalness"].max() <= 5.0
    assert scores["emotion_score"].mean() >= 4.5
    # names, aliases and ids are the same target
    names = [CANONICAL_EMOTIONS[e] for e in test["emotion"]]
    np.testing.assert_allclose(
        oracle.score(test["text"], test["speech_tokens"], names)["emotion_prob"], scores["emotion_prob"]
    )


def test_artifacts_cut_naturalness_but_do_not_fool_emotion_truth(oracle, world, corpus):
    test = corpus["test"]
    clean = oracle.score(test["text"], test["speech_tokens"], test["emotion"])
    hacked_tokens = insert_artifacts(test["speech_tokens"], 0.05, world, seed=1)
    hacked = oracle.score(test["text"], hacked_tokens, test["emotion"])
    assert all(len(h) == len(t) + int(np.ceil(0.05 * len(t))) for h, t in zip(hacked_tokens, test["speech_tokens"]))
    assert hacked["artifact_rate"].min() > 0.0
    np.testing.assert_allclose(hacked["emotion_probs"], clean["emotion_probs"])  # artifacts carry no emotion
    np.testing.assert_array_equal(hacked["cer"], clean["cer"])
    assert hacked["naturalness"].mean() < clean["naturalness"].mean() - 1.5
    # artifacts aimed at an emotion cannot buy it: P(angry) unchanged for non-angry speech
    angry = CANONICAL_EMOTIONS.index("angry")
    np.testing.assert_allclose(hacked["emotion_probs"][:, angry], clean["emotion_probs"][:, angry])


def test_garbled_and_repeated_tokens_are_penalised(oracle, world, corpus):
    test = corpus["test"]
    clean = oracle.summarize(test["text"], test["speech_tokens"], test["emotion"])
    garbled = oracle.summarize(
        test["text"], substitute_tokens(test["speech_tokens"], 0.2, world, seed=2), test["emotion"]
    )
    repeated = oracle.summarize(test["text"], repeat_tokens(test["speech_tokens"], 3), test["emotion"])
    assert garbled["cer"] > 0.3 and garbled["naturalness"] < clean["naturalness"] - 2.0
    assert repeated["prosody_plausibility"] < 0.2 and repeated["naturalness"] < clean["naturalness"] - 2.0
    # a wrong text is unintelligible speech for that text
    texts = list(test["text"])
    wrong_text = oracle.score(texts[1:] + texts[:1], test["speech_tokens"], test["emotion"])
    assert wrong_text["cer"].mean() > 0.5
    # more garbling -> monotonically worse
    mild = oracle.summarize(
        test["text"], substitute_tokens(test["speech_tokens"], 0.05, world, seed=2), test["emotion"]
    )
    assert clean["cer"] < mild["cer"] < garbled["cer"]


def test_wrong_emotion_scores_low(oracle, corpus):
    test = corpus["test"]
    shifted = [(e + 1) % 6 for e in test["emotion"]]
    scores = oracle.score(test["text"], test["speech_tokens"], shifted)
    assert scores["emotion_correct"].mean() < 0.05 and scores["emotion_score"].mean() < 1.5


def test_silence_scores_worst(oracle, world):
    texts = ["a e i", "p t k"]
    scores = oracle.score(texts, [[], insert_artifacts([], 0.0, world)], ["happy", "sad"])
    np.testing.assert_array_equal(scores["naturalness"], [1.0, 1.0])
    np.testing.assert_array_equal(scores["cer"], [1.0, 1.0])
    np.testing.assert_allclose(scores["emotion_prob"], 1 / 6)
    assert not scores["emotion_correct"].any()
    only_artifacts = oracle.score(["a"], [world.artifact_token_ids[:3].tolist()], ["neutral"])
    assert only_artifacts["artifact_rate"][0] == 1.0 and only_artifacts["naturalness"][0] == 1.0


def test_bad_input_errors(oracle, world):
    tokens = world.synthesize(["a e"], ["happy"])
    with pytest.raises(UnknownEmotionError, match="Unknown emotion label 'elated'"):
        oracle.score(["a e"], tokens, ["elated"])
    with pytest.raises(ValueError, match="no prosody rule"):
        oracle.score(["a e"], tokens, ["disgusted"])
    with pytest.raises(ValueError, match="out of range"):
        oracle.score(["a e"], tokens, [6])
    with pytest.raises(ValueError, match=r"outside the codebook \[0, 512\)"):
        oracle.score(["a e"], [tokens[0] + [512]], ["happy"])
    with pytest.raises(ValueError, match="outside the codebook"):
        oracle.score(["a e"], [[-1]], ["happy"])
    with pytest.raises(ValueError, match="empty batch"):
        oracle.score([], [], [])
    with pytest.raises(ValueError, match="Text 0 is empty"):
        oracle.score(["  "], tokens, ["happy"])
    with pytest.raises(ValueError, match="Batch sizes differ"):
        oracle.score(["a e", "a"], tokens, ["happy"])
    with pytest.raises(ValueError, match="'xx', which is no phoneme"):
        oracle.score(["a xx"], tokens, ["happy"])
    with pytest.raises(ValueError, match="not written in language 'beta'"):
        oracle.score(["a e"], tokens, ["happy"], languages="beta")
    with pytest.raises(ValueError, match="Unknown testbed language 'gamma'"):
        make_emotion_corpus(language="gamma", num_train=4, num_test=2)
    with pytest.raises(ValueError, match="spurious_artifact_rate"):
        make_emotion_corpus(num_train=4, num_test=2, spurious_artifact_rate=1.5)
    with pytest.raises(ValueError, match="rate must be in"):
        insert_artifacts(tokens[0], -0.1, world)


def test_spurious_artifacts_only_in_train_and_only_for_chosen_emotions(world):
    corpus = make_emotion_corpus(
        num_train=300, num_test=60, spurious_artifact_rate=1.0, spurious_emotions=("angry", "sad"), world=world
    )
    chosen = {CANONICAL_EMOTIONS.index("angry"), CANONICAL_EMOTIONS.index("sad")}
    for tokens, emotion in zip(corpus["train"]["speech_tokens"], corpus["train"]["emotion"]):
        has_artifact = max(tokens) >= world.first_artifact_id
        assert has_artifact == (emotion in chosen)
    assert all(max(t) < world.first_artifact_id for t in corpus["test"]["speech_tokens"])
    half = make_emotion_corpus(num_train=600, num_test=6, spurious_artifact_rate=0.5, world=world)
    angry = [t for t, e in zip(half["train"]["speech_tokens"], half["train"]["emotion"]) if e == 2]
    rate = np.mean([max(t) >= world.first_artifact_id for t in angry])
    assert 0.35 < rate < 0.65


def test_batched_levenshtein_matches_reference():
    rng = np.random.default_rng(0)

    def reference(a, b):
        d = np.arange(len(b) + 1)
        for i in range(1, len(a) + 1):
            prev, d = d, np.empty_like(d)
            d[0] = i
            for j in range(1, len(b) + 1):
                d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
        return d[-1]

    refs = [rng.integers(0, 4, size=rng.integers(1, 8)) for _ in range(50)]
    hyps = [rng.integers(0, 4, size=rng.integers(0, 10)) for _ in range(50)]

    def pad(seqs, fill):
        return np.array([np.pad(s, (0, 10 - len(s)), constant_values=fill) for s in seqs])

    got = batched_levenshtein(
        pad(refs, -3), np.array([len(r) for r in refs]), pad(hyps, -2), np.array([len(h) for h in hyps])
    )
    np.testing.assert_array_equal(got, [reference(r, h) for r, h in zip(refs, hyps)])


def test_speed(oracle, world):
    start = time.perf_counter()
    corpus = make_emotion_corpus(num_train=1200, num_test=300, world=world)
    generate_seconds = time.perf_counter() - start
    train = corpus["train"]
    texts, tokens, emotions = list(train["text"]) * 8, list(train["speech_tokens"]) * 8, list(train["emotion"]) * 8
    start = time.perf_counter()
    oracle.score(texts[:10_000], tokens[:10_000], emotions[:10_000])
    score_seconds = time.perf_counter() - start
    print(f"generate 1,500 utterances: {generate_seconds:.2f}s; score 10,000: {score_seconds:.2f}s")
    # generous bounds: the shared CI box is slow, measured ~0.1s / ~0.5s on one idle core
    assert generate_seconds < 3.0 and score_seconds < 5.0
