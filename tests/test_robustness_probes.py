"""Reward-model robustness probes on hand-built classifiers whose behaviour is known in closed form.

The fixture model has an identity encoder (attention/feed-forward outputs and positions zeroed), so
h'_t = LayerNorm(E[token_t]) depends on the token alone, and each token class lives on its own pair
of hidden dimensions:

    cue token 0        -> h' = sqrt(3) * ( 1, -1, 0, 0, 0, 0)   the emotion evidence
    filler tokens 1..5 -> h' = sqrt(3) * ( 0, 0, 1, -1, 0, 0)   neutral speech
    artifact ids 6, 7  -> h' = sqrt(3) * ( 0, 0, 0, 0, 1, -1)   clicks

Binary head: logit_0 = 0, logit_1 = CUE_WEIGHT * pooled[0] + artifact_weight * pooled[4] + BIAS. With
length-8 utterances one cue gives logit_1 = 20 * sqrt(3) / 8 - 2 > 0 ("angry"), none gives -2 ("neutral").
"""

import math

import numpy as np
import pytest
import torch

from rrpo_hf.evaluation import (
    artifact_sensitivity,
    embedding_attack_accuracy,
    exaggeration_sensitivity,
    insert_artifact_tokens,
    token_substitution_attack,
)
from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
from rrpo_hf.testbed import EmotionWorld, insert_artifacts


CUE, FILLERS, ARTIFACTS = 0, (1, 2, 3, 4, 5), (6, 7)
CUE_WEIGHT, BIAS = 20.0, -2.0
LENGTH = 8


def hand_built_model(artifact_weight: float = 0.0, pooling: str = "mean", suppress_artifacts: bool = False):
    config = RobustSERConfig(
        vocab_size=8,
        hidden_size=6,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        hidden_dropout_prob=0.0,
        attention_dropout=0.0,
        max_position_embeddings=32,
        pooling=pooling,
        id2label={0: "neutral", 1: "angry"},
    )
    model = RobustSERForAudioClassification(config)
    with torch.no_grad():
        for parameter in (
            model.robust_ser.encoder.position_embeddings.weight,
            model.classifier.weight,
            model.classifier.bias,
        ):
            parameter.zero_()
        for layer in model.robust_ser.encoder.layers:
            for linear in (layer.attention.out_proj, layer.feed_forward.down_proj):
                linear.weight.zero_()
                linear.bias.zero_()
        embedding = model.robust_ser.token_embedding.weight
        embedding.zero_()
        embedding[CUE, 0:2] = torch.tensor([1.0, -1.0])
        embedding[list(FILLERS), 2:4] = torch.tensor([1.0, -1.0])
        embedding[list(ARTIFACTS), 4:6] = torch.tensor([1.0, -1.0])
        model.classifier.weight[1, 0] = CUE_WEIGHT
        model.classifier.weight[1, 4] = artifact_weight
        model.classifier.bias[1] = BIAS
        if pooling == "attention":
            model.pooler.score.weight.zero_()
            model.pooler.score.bias.zero_()
            if suppress_artifacts:
                # artifact frames score -30 * sqrt(3): pooling weight ~1e-23, the head never sees them
                model.pooler.score.weight[0, 4] = -30.0
    return model.eval()


def utterances(num: int, num_cues: int, seed: int, length: int = LENGTH) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        tokens = rng.choice(FILLERS, size=length)
        tokens[rng.choice(length, size=num_cues, replace=False)] = CUE
        out.append(tokens.tolist())
    return out


def predict(model, sequences):
    with torch.no_grad():
        return [int(model(input_ids=torch.tensor([tokens])).logits.argmax(-1)) for tokens in sequences]


def tiny_random_model(seed: int = 0):
    torch.manual_seed(seed)
    config = RobustSERConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=24,
    )
    return RobustSERForAudioClassification(config).eval()


def random_utterances(num: int, seed: int, vocab: int = 40) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=int(rng.integers(4, 14))).tolist() for _ in range(num)]


@pytest.fixture(scope="module")
def fragile():
    model = hand_built_model()
    neutral, angry = utterances(6, 0, seed=1), utterances(6, 1, seed=2)
    # the fixture itself must be what the docstring says, or the tests below prove nothing
    assert predict(model, neutral) == [0] * 6 and predict(model, angry) == [1] * 6
    return model, neutral + angry, [0] * 6 + [1] * 6


# -------------------------------------------------------------------------------------- substitution attack
def test_one_substitution_flips_the_token_keyed_classifier(fragile):
    model, sequences, labels = fragile
    result = token_substitution_attack(model, sequences, labels, max_substitutions=1, show_progress=False)
    assert result["n"] == result["num_attacked"] == 12
    assert result["attack_success_rate"] == 1.0 and result["mean_substitutions"] == 1.0
    for original, label, row in zip(sequences, labels, result["per_utterance"]):
        assert row["flipped"] and row["num_substitutions"] == 1
        ((position, old, new),) = row["substitutions"]
        # the gradient found the one token that matters: write the cue into neutral speech, or erase it
        assert (old in FILLERS and new == CUE) if label == 0 else (old == CUE and new in FILLERS)
        expected = list(original)
        expected[position] = new
        assert row["attacked_tokens"] == expected
        # the flip is real on the discrete utterance, not only on the one-hot surrogate
        assert predict(model, [row["attacked_tokens"]]) == [row["final_prediction"]] != [label]
        assert row["label_prob_after"] < 0.5 < row["label_prob_before"]


def test_zero_budget_flips_nothing(fragile):
    model, sequences, labels = fragile
    result = token_substitution_attack(model, sequences, labels, max_substitutions=0, show_progress=False)
    assert result["attack_success_rate"] == 0.0 and result["num_flipped"] == 0 and result["mean_substitutions"] == 0.0
    assert [row["attacked_tokens"] for row in result["per_utterance"]] == sequences


def test_candidate_tokens_bound_what_the_attacker_can_write(fragile):
    model, sequences, labels = fragile
    result = token_substitution_attack(
        model, sequences, labels, max_substitutions=3, candidate_token_ids=FILLERS, show_progress=False
    )
    for label, row in zip(labels, result["per_utterance"]):
        assert all(new in FILLERS for _, _, new in row["substitutions"])
        if label == 0:  # fillers cannot create the cue: the whole budget is spent, distinct positions, no flip
            assert not row["flipped"] and row["num_substitutions"] == 3
            assert len({position for position, _, _ in row["substitutions"]}) == 3
        else:
            assert row["flipped"] and row["num_substitutions"] == 1
    assert result["attack_success_rate"] == 0.5
    assert result["mean_substitutions"] == 2.0 and result["mean_substitutions_successful"] == 1.0


def test_wrongly_classified_utterances_are_not_attacked(fragile):
    model, sequences, labels = fragile
    wrong = [1 - label for label in labels[:3]] + labels[3:]
    result = token_substitution_attack(model, sequences, wrong, max_substitutions=1, show_progress=False)
    assert result["num_attacked"] == 9 and result["clean_accuracy"] == 0.75
    assert all(row["num_substitutions"] == 0 and not row["flipped"] for row in result["per_utterance"][:3])


def test_substitution_attack_is_batch_invariant_on_padded_batches():
    model = tiny_random_model()
    sequences = random_utterances(10, seed=3)
    labels = predict(model, sequences)
    one = token_substitution_attack(model, sequences, labels, 2, batch_size=1, show_progress=False)
    many = token_substitution_attack(model, sequences, labels, 2, batch_size=4, show_progress=False)
    for a, b in zip(one["per_utterance"], many["per_utterance"]):
        assert a["substitutions"] == b["substitutions"] and a["final_prediction"] == b["final_prediction"]
        assert a["num_substitutions"] <= 2
    assert one["attack_success_rate"] == many["attack_success_rate"] > 0


# ------------------------------------------------------------------------------------ artifact sensitivity
def test_artifact_sensitivity_is_large_for_a_model_keyed_on_artifacts():
    model = hand_built_model(artifact_weight=40.0)
    neutral, angry = utterances(10, 0, seed=4), utterances(3, 1, seed=5)
    result = artifact_sensitivity(
        model,
        neutral + angry,
        ["neutral"] * 10 + ["angry"] * 3,
        "angry",
        ARTIFACTS,
        rate=1 / LENGTH,
        show_progress=False,
    )
    assert result["n"] == 10  # target-emotion utterances are not probed
    assert result["mean_artifacts_inserted"] == 1.0
    assert result["mean_prob_before"] == pytest.approx(1 / (1 + math.exp(-BIAS)), abs=1e-5)
    assert result["mean_prob_after"] > 0.99 and result["mean_delta"] > 0.85
    assert result["flip_rate"] == 1.0 and result["num_flippable"] == 10
    assert result["target_prediction_rate_before"] == 0.0 and result["target_prediction_rate_after"] == 1.0


def test_artifact_sensitivity_is_zero_for_a_model_that_ignores_artifacts():
    # same head (it would react to artifacts), but attention pooling gives artifact frames no weight
    model = hand_built_model(artifact_weight=40.0, pooling="attention", suppress_artifacts=True)
    sequences = utterances(10, 0, seed=4)
    result = artifact_sensitivity(model, sequences, [0] * 10, 1, ARTIFACTS, rate=0.5, show_progress=False)
    assert result["mean_artifacts_inserted"] == 4.0
    assert abs(result["mean_delta"]) < 1e-6 and result["std_delta"] < 1e-6
    assert result["flip_rate"] == 0.0


def test_default_insertion_matches_the_testbed_and_insert_fn_is_used():
    world = EmotionWorld()
    rng = np.random.default_rng(0)
    natural = [rng.choice(world.speech_token_ids, size=int(n)).tolist() for n in rng.integers(5, 30, size=6)]
    assert insert_artifact_tokens(natural, world.artifact_token_ids, 0.2, seed=7) == insert_artifacts(
        natural, 0.2, world, seed=7
    )
    model = hand_built_model(artifact_weight=40.0)
    sequences = utterances(4, 0, seed=6)
    calls = []

    def no_op(tokens, rate, seed):
        calls.append((rate, seed))
        return tokens

    result = artifact_sensitivity(model, sequences, [0] * 4, 1, rate=0.3, seed=5, insert_fn=no_op, show_progress=False)
    assert calls == [(0.3, 5)] and result["mean_delta"] == 0.0 and result["mean_artifacts_inserted"] == 0.0


# ------------------------------------------------------------------------------------------ h' attacks
@pytest.fixture(scope="module")
def margins_fixture():
    model = hand_built_model(artifact_weight=0.0)
    rng = np.random.default_rng(8)
    sequences = [
        utterances(1, int(rng.integers(0, 4)), seed=100 + i, length=int(rng.integers(6, 20)))[0] for i in range(40)
    ]
    labels = predict(model, sequences)
    labels[:4] = [1 - label for label in labels[:4]]  # a few clean errors
    with torch.no_grad():
        margins = torch.cat([torch.diff(model(input_ids=torch.tensor([t])).logits, dim=-1)[0] for t in sequences])
    return model, sequences, labels, margins.numpy()


def test_embedding_attack_with_zero_epsilon_is_clean_accuracy(margins_fixture):
    model, sequences, labels, _ = margins_fixture
    for steps in (1, 4):
        result = embedding_attack_accuracy(
            model, sequences, labels, 0.0, steps=steps, batch_size=7, show_progress=False
        )
        assert result["attacked_accuracy"] == result["clean_accuracy"] == 36 / 40
        assert result["max_perturbation_norm"] == 0.0
    with torch.no_grad():
        hidden_norms = [model(input_ids=torch.tensor([t])).last_hidden_state.norm().item() for t in sequences]
    assert result["mean_hidden_norm"] == pytest.approx(np.mean(hidden_norms), rel=1e-5)  # padding excluded


def test_fgm_matches_the_closed_form_and_never_gains_accuracy_with_epsilon(margins_fixture):
    model, sequences, labels, margins = margins_fixture
    lengths = np.array([len(tokens) for tokens in sequences])
    labels_array = np.array(labels)
    correct = (margins > 0) == (labels_array == 1)
    accuracies = []
    for epsilon in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0):
        result = embedding_attack_accuracy(model, sequences, labels, epsilon, batch_size=6, show_progress=False)
        # binary head over mean-pooled h': FGM moves the logit margin by epsilon * ||w_1 - w_0|| / sqrt(L) (Eq. 4 norm)
        survives = correct & (np.abs(margins) > epsilon * CUE_WEIGHT / np.sqrt(lengths))
        assert result["attacked_accuracy"] == pytest.approx(survives.mean())
        assert result["mean_perturbation_norm"] == pytest.approx(epsilon, rel=1e-4)
        accuracies.append(result["attacked_accuracy"])
    assert all(later <= earlier for earlier, later in zip(accuracies, accuracies[1:]))
    assert accuracies[-1] < accuracies[0]


@pytest.mark.parametrize("seeded_model", ["hand_built", "random"])
def test_pgd_is_at_least_as_strong_as_fgm_and_stays_in_the_ball(seeded_model, margins_fixture):
    if seeded_model == "hand_built":
        model, sequences, labels, _ = margins_fixture
    else:
        model = tiny_random_model(seed=1)
        sequences = random_utterances(16, seed=9)
        labels = predict(model, sequences)
    for epsilon in (0.3, 1.0, 3.0):
        fgm = embedding_attack_accuracy(model, sequences, labels, epsilon, steps=1, show_progress=False)
        pgd = embedding_attack_accuracy(model, sequences, labels, epsilon, steps=5, show_progress=False)
        assert pgd["attacked_accuracy"] <= fgm["attacked_accuracy"] <= fgm["clean_accuracy"]
        assert pgd["step_size"] == pytest.approx(2.5 * epsilon / 5) and fgm["step_size"] == epsilon
        assert pgd["max_perturbation_norm"] <= epsilon * (1 + 1e-5)


# ------------------------------------------------------------------------------------ state and errors
def test_probes_leave_the_model_as_they_found_it():
    model = tiny_random_model().train()
    model.classifier.weight.requires_grad_(False)
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    sequences = random_utterances(6, seed=10)
    labels = [0, 1, 2, 3, 4, 5]
    token_substitution_attack(model, sequences, labels, 2, show_progress=False)
    embedding_attack_accuracy(model, sequences, labels, 1.0, steps=3, show_progress=False)
    artifact_sensitivity(model, sequences, labels, 1, [38, 39], rate=0.2, show_progress=False)
    assert model.training
    for name, parameter in model.named_parameters():
        assert parameter.grad is None and torch.equal(parameter, before[name])
        assert parameter.requires_grad == (name != "classifier.weight")


def test_bad_inputs_raise_clear_errors(fragile):
    model, sequences, labels = fragile
    with pytest.raises(ValueError, match="`labels` has 11 entries"):
        token_substitution_attack(model, sequences, labels[:-1], show_progress=False)
    with pytest.raises(ValueError, match="max_substitutions"):
        token_substitution_attack(model, sequences, labels, max_substitutions=-1, show_progress=False)
    with pytest.raises(ValueError, match="candidate_token_ids` contains id 8"):
        token_substitution_attack(model, sequences, labels, candidate_token_ids=[1, 8], show_progress=False)
    with pytest.raises(ValueError, match="Utterance 1 of `speech_tokens` is empty"):
        token_substitution_attack(model, [[1, 2], []], [0, 0], show_progress=False)
    with pytest.raises(ValueError, match="token id 9 outside the reward model's codebook"):
        embedding_attack_accuracy(model, [[1, 9]], [0], 1.0, show_progress=False)
    with pytest.raises(TypeError, match="single token id"):
        embedding_attack_accuracy(model, [1, 2, 3], [0, 0, 0], 1.0, show_progress=False)
    with pytest.raises(ValueError, match="`epsilon` must be a finite number >= 0"):
        embedding_attack_accuracy(model, sequences, labels, -0.1, show_progress=False)
    with pytest.raises(ValueError, match="`steps` must be an integer >= 1"):
        embedding_attack_accuracy(model, sequences, labels, 1.0, steps=0, show_progress=False)
    with pytest.raises(ValueError, match="outside the reward model's classes"):
        embedding_attack_accuracy(model, sequences, [2] * 12, 1.0, show_progress=False)
    with pytest.raises(ValueError, match="does not predict"):
        artifact_sensitivity(model, sequences, labels, "sad", ARTIFACTS, show_progress=False)
    with pytest.raises(ValueError, match="Every utterance has the target emotion"):
        artifact_sensitivity(model, sequences[:3], [1, 1, 1], 1, ARTIFACTS, show_progress=False)
    with pytest.raises(ValueError, match="Pass `artifact_token_ids`"):
        artifact_sensitivity(model, sequences, labels, 1, show_progress=False)
    with pytest.raises(ValueError, match="`rate` must be in"):
        artifact_sensitivity(model, sequences, labels, 1, ARTIFACTS, rate=1.5, show_progress=False)
    with pytest.raises(ValueError, match="max_position_embeddings=32"):
        artifact_sensitivity(model, [[1] * 30], [0], 1, ARTIFACTS, rate=0.5, show_progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        artifact_sensitivity(model, sequences, labels, 1, ARTIFACTS, batch_size=0, show_progress=False)
    with pytest.raises(TypeError, match="RobustSERForAudioClassification-like"):
        embedding_attack_accuracy(torch.nn.Linear(2, 2), sequences, labels, 1.0, show_progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_probes_run_on_the_model_device_and_agree_with_cpu(fragile):
    model, sequences, labels = fragile
    cuda_model = hand_built_model().to("cuda")
    for probe in (
        lambda m: [
            (row["substitutions"], row["final_prediction"])
            for row in token_substitution_attack(m, sequences, labels, 2, show_progress=False)["per_utterance"]
        ],
        lambda m: embedding_attack_accuracy(m, sequences, labels, 0.5, steps=3, show_progress=False)["attacked_ua"],
        lambda m: artifact_sensitivity(m, sequences, labels, 1, ARTIFACTS, rate=0.2, show_progress=False)["flip_rate"],
    ):
        cpu_result, cuda_result = probe(model), probe(cuda_model)
        assert cpu_result == cuda_result


# -------------------------------------------------------------------------------------- exaggeration
def angry_probability(num_cues: int) -> float:
    logit = CUE_WEIGHT * math.sqrt(3) * num_cues / LENGTH + BIAS
    return 1 / (1 + math.exp(-logit))


def test_exaggeration_probe_reads_the_closed_form_rise_of_the_target_probability():
    model = hand_built_model()
    natural, exaggerated = utterances(5, 1, seed=3), utterances(5, 3, seed=3)  # the cue three times instead of once
    result = exaggeration_sensitivity(model, natural, exaggerated, target_emotion="angry", show_progress=False)
    before, after = angry_probability(1), angry_probability(3)
    assert result["n"] == 5
    assert result["mean_prob_natural"] == pytest.approx(before, abs=1e-5)
    assert result["mean_prob_exaggerated"] == pytest.approx(after, abs=1e-5)
    assert result["mean_delta"] == pytest.approx(after - before, abs=1e-5) and result["mean_delta"] > 0
    assert result["mean_delta_log_prob"] == pytest.approx(math.log(after) - math.log(before), abs=1e-5)
    # an RM that saturates at the natural level does not pay for exaggeration: the neutral class sees no rise
    flat = exaggeration_sensitivity(model, natural, exaggerated, target_emotion="neutral", show_progress=False)
    assert flat["mean_delta"] < 0


def test_exaggeration_probe_needs_paired_utterances():
    model = hand_built_model()
    with pytest.raises(ValueError, match="same non-empty set of utterances twice"):
        exaggeration_sensitivity(model, utterances(3, 1, 0), utterances(2, 3, 0), "angry", show_progress=False)
