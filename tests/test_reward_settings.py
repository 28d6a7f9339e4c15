"""One source of truth for the reward: an RM's robust-loss settings (ε, ε_adv, α, radius rule) travel with it.

The settings an RM was trained with are saved in its config and are the defaults of the reward built from it; an
explicit `DiffROConfig.reward_*` overrides them and is logged; the bounds are the same everywhere; folders saved
before the radius rule existed load with the old defaults; the scoring callers return what they returned before.
"""

import importlib.util
import json
import logging
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from test_examples_resume import stage_outputs as stage_outputs  # noqa: E402  (the toy SFT policy fixture)

from rrpo_hf.data.padding import right_pad
from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
from rrpo_hf.ops import RobustLossSettings, adversarial_radius, fgm_perturbation
from rrpo_hf.rewards import EmotionReward, build_reward_set
from rrpo_hf.trainers import DiffROConfig, RobustRewardConfig


REPO = Path(__file__).resolve().parents[1]
TARGETS = ["happy", "sad", "angry", "neutral"]


def tiny_rm(**settings) -> RobustSERForAudioClassification:
    torch.manual_seed(0)
    config = RobustSERConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        **settings,
    )
    return RobustSERForAudioClassification(config).eval()


def fixed_tokens() -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 32, (n,), generator=generator).tolist() for n in (5, 9, 7, 12)]


def hand_reward_loss_on(model, token_probs, mask, labels, settings: RobustLossSettings) -> torch.Tensor:
    """L_ser per sample written out from Eq. 2-5, without rrpo_hf.ops.robust_emotion_loss."""
    probs = token_probs.detach().float().requires_grad_(True)
    out = model(input_token_probs=probs, attention_mask=mask)
    hidden = out.last_hidden_state
    k = out.logits.shape[-1]
    smoothed = (1 - settings.label_smoothing) * F.one_hot(labels, k) + settings.label_smoothing / k
    loss_emo = -(smoothed * out.logits.log_softmax(-1)).sum(-1)
    (grad,) = torch.autograd.grad(loss_emo.sum(), hidden, retain_graph=True)
    grad = grad * mask[..., None]
    radius = torch.full((len(labels),), settings.adv_epsilon)
    if settings.adv_epsilon_scale == "relative":
        # ε_adv times the RMS over valid frames of each frame's norm of h'
        frame_norms = (hidden.detach() * mask[..., None]).norm(dim=-1)
        radius = settings.adv_epsilon * (frame_norms.pow(2).sum(dim=1) / mask.sum(dim=1)).sqrt()
    delta = radius[:, None, None] * grad / grad.flatten(1).norm(dim=1)[:, None, None]
    adv_logits = model.classify(hidden + delta, mask)
    loss_adv = -(smoothed * adv_logits.log_softmax(-1)).sum(-1)
    return (loss_emo + settings.adv_alpha * loss_adv).detach()


def hand_reward_loss(model, tokens, targets, settings: RobustLossSettings) -> torch.Tensor:
    ids, mask = right_pad(tokens, 0)
    labels = torch.tensor([model.config.label2id[name] for name in targets])
    return hand_reward_loss_on(model, F.one_hot(ids, model.config.vocab_size).float(), mask, labels, settings)


def reward_loss(reward: EmotionReward, tokens, targets) -> torch.Tensor:
    ids, mask = right_pad(tokens, 0)
    probs = F.one_hot(ids, reward.model.config.vocab_size).float().requires_grad_(True)
    return reward.loss_terms(probs, mask, {"target_emotions": targets})["loss"].detach()


# ------------------------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    "bad", [dict(label_smoothing=1.0), dict(label_smoothing=-0.1), dict(adv_alpha=-0.5), dict(adv_epsilon=0.0)]
)
def test_the_bounds_are_the_same_everywhere(bad, tmp_path):
    values = {**dict(label_smoothing=0.1, adv_epsilon=0.5, adv_alpha=0.5), **bad}
    field = next(iter(bad))
    with pytest.raises(ValueError, match=field):
        RobustLossSettings(**values)
    with pytest.raises(Exception, match=field):  # huggingface_hub's strict-dataclass error, wrapping the ValueError
        tiny_rm(**values)
    with pytest.raises(ValueError, match=field):
        RobustRewardConfig(output_dir=str(tmp_path), **values)
    with pytest.raises(ValueError, match=f"reward_{field}"):
        DiffROConfig(output_dir=str(tmp_path), **{f"reward_{key}": value for key, value in values.items()})
    with pytest.raises(ValueError, match=field):
        EmotionReward(tiny_rm(), **values)
    # The edges that are allowed are allowed everywhere.
    edge = dict(label_smoothing=0.0, adv_epsilon=0.0, adv_alpha=0.0)
    RobustLossSettings(**edge), tiny_rm(**edge), RobustRewardConfig(output_dir=str(tmp_path), **edge)
    DiffROConfig(output_dir=str(tmp_path), **{f"reward_{key}": value for key, value in edge.items()})


def test_the_relative_radius_is_epsilon_times_the_rms_frame_norm_of_h_per_utterance():
    torch.manual_seed(0)
    hidden, grad = torch.randn(3, 6, 4) * torch.tensor([1.0, 5.0, 0.2])[:, None, None], torch.randn(3, 6, 4)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    delta = fgm_perturbation(grad, mask, adversarial_radius(hidden, mask, 0.3, "relative"))
    rms_frame_norm = torch.stack(
        [hidden[b, : int(mask[b].sum())].norm(dim=-1).pow(2).mean().sqrt() for b in range(3)]
    )  # padded frames (here filled with noise) count for nothing
    torch.testing.assert_close(delta.flatten(1).norm(dim=1), 0.3 * rms_frame_norm)
    assert bool((delta[mask == 0] == 0).all())
    # A length-independent radius: the same frames repeated twice give the same ‖δ‖ (the per-utterance norm would
    # grow by √2), and a frame of norm 1 everywhere gives ‖δ‖ = ε_adv.
    frames = torch.randn(1, 5, 4)
    once = adversarial_radius(frames, torch.ones(1, 5), 1.0, "relative")
    torch.testing.assert_close(adversarial_radius(frames.repeat(1, 2, 1), torch.ones(1, 10), 1.0, "relative"), once)
    unit = torch.nn.functional.normalize(torch.randn(2, 7, 4), dim=-1)
    torch.testing.assert_close(adversarial_radius(unit, None, 1.0, "relative"), torch.ones(2))
    absolute = fgm_perturbation(grad, mask, adversarial_radius(hidden, mask, 0.3, "absolute"))
    torch.testing.assert_close(absolute.flatten(1).norm(dim=1), torch.full((3,), 0.3))


# ------------------------------------------------------------------------------------------------ the reward


def test_the_reward_uses_the_rms_own_settings_and_an_override_wins_and_is_logged(caplog):
    own = dict(label_smoothing=0.2, adv_epsilon=0.3, adv_alpha=0.2, adv_epsilon_scale="relative")
    model, tokens = tiny_rm(**own), fixed_tokens()
    with caplog.at_level(logging.WARNING):
        reward = EmotionReward(model)
    assert reward.settings == RobustLossSettings(**own) == model.config.robust_loss
    assert not caplog.records
    torch.testing.assert_close(
        reward_loss(reward, tokens, TARGETS), hand_reward_loss(model, tokens, TARGETS, reward.settings)
    )

    with caplog.at_level(logging.WARNING):
        overridden = EmotionReward(model, adv_alpha=0.5)
    assert overridden.settings == RobustLossSettings(**{**own, "adv_alpha": 0.5})
    (record,) = caplog.records
    assert "adv_alpha=0.5" in record.message and "the reward model's own: 0.2" in record.message
    torch.testing.assert_close(
        reward_loss(overridden, tokens, TARGETS), hand_reward_loss(model, tokens, TARGETS, overridden.settings)
    )
    # The builder passes DiffROConfig's overrides on: None (the default) keeps the model's own.
    args = DiffROConfig(output_dir="unused", reward_adv_alpha=0.5)
    assert DiffROConfig(output_dir="unused").reward_loss_overrides == {}
    built = build_reward_set(model, loss_overrides=args.reward_loss_overrides).emotion_reward
    assert built.settings == overridden.settings


def test_an_old_format_folder_loads_with_the_old_defaults(tmp_path):
    """A folder saved before the radius rule existed: its config.json has no `adv_epsilon_scale` (and one written
    by hand has none of the settings)."""
    model = tiny_rm(label_smoothing=0.2, adv_epsilon=0.3, adv_alpha=0.2)
    model.save_pretrained(tmp_path / "rm")
    config_path = tmp_path / "rm" / "config.json"
    config = json.loads(config_path.read_text())
    del config["adv_epsilon_scale"]
    config_path.write_text(json.dumps(config))
    loaded = RobustSERForAudioClassification.from_pretrained(tmp_path / "rm")
    assert loaded.config.robust_loss == RobustLossSettings(0.2, 0.3, 0.2, "absolute")
    assert (loaded.config.label_smoothing, loaded.config.adv_epsilon, loaded.config.adv_alpha) == (0.2, 0.3, 0.2)
    for key in ("label_smoothing", "adv_epsilon", "adv_alpha"):
        del config[key]
    config_path.write_text(json.dumps(config))
    loaded = RobustSERForAudioClassification.from_pretrained(tmp_path / "rm")
    assert EmotionReward(loaded).settings == RobustLossSettings() == RobustLossSettings(0.1, 0.5, 0.5, "absolute")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


# ------------------------------------------------------------------------------------------------ scoring callers

# What each caller returned at 7f17319 (before this change) on the fixed batch: /work/main's code, captured by
# running the callers below on `tiny_rm(label_smoothing=0.2, adv_epsilon=0.3, adv_alpha=0.2)` and `fixed_tokens()`.
PINNED = {
    "judge": {
        "judge_reward": [-1.7899545431137085, -1.8031774759292603, -1.7801411151885986, -1.83686363697052],
        "judge_accuracy": [0.0, 0.0, 0.0, 0.0],
    },
    "rm_scorer": {
        "rm_predicted": ["angry", "angry", "surprised", "happy"],
        "rm_correct": [False, False, False, False],
        "rm_target_prob": [0.16702112555503845, 0.16456952691078186, 0.1688351184129715, 0.15852667391300201],
        "rm_reward": [-1.7902743816375732, -1.8019330501556396, -1.7814496755599976, -1.8318949937820435],
    },
    "probabilities": [
        [
            0.15764635801315308,
            0.16702112555503845,
            0.18119613826274872,
            0.16324608027935028,
            0.1708083301782608,
            0.16008198261260986,
        ],
        [
            0.16131824254989624,
            0.1676507145166397,
            0.1725018173456192,
            0.16456952691078186,
            0.168394073843956,
            0.16556566953659058,
        ],
        [
            0.16098299622535706,
            0.1681685894727707,
            0.1688351184129715,
            0.16773931682109833,
            0.169515460729599,
            0.16475853323936462,
        ],
        [
            0.15852667391300201,
            0.1722966730594635,
            0.16929331421852112,
            0.16676613688468933,
            0.1698971837759018,
            0.16322004795074463,
        ],
    ],
    "predict": [2, 2, 4, 1],
    "artifact": {
        "n": 4,
        "target_emotion": 1,
        "rate": 0.3,
        "mean_prob_before": 0.1687842756509781,
        "mean_prob_after": 0.17002976313233376,
        "mean_delta": 0.0012454874813556671,
        "std_delta": 0.0010674338420552094,
        "flip_rate": 0.0,
        "num_flippable": 3,
        "target_prediction_rate_before": 0.25,
        "target_prediction_rate_after": 0.25,
        "mean_artifacts_inserted": 3.0,
    },
    "reward": {
        "loss": [2.1499433517456055, 2.1634318828582764, 2.1392769813537598, 2.199242353439331],
        "loss_emo": [1.7902743816375732, 1.8019330501556396, 1.7814496755599976, 1.8318949937820435],
        "loss_adv": [1.7983452081680298, 1.8074945211410522, 1.7891366481781006, 1.836736798286438],
        "correct": [0.0, 0.0, 0.0, 0.0],
    },
    "reward_grad_norm": 0.210876926779747,
}


def load_evaluate_rm():
    spec = importlib.util.spec_from_file_location("settings_test_evaluate_rm", REPO / "examples" / "evaluate_rm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_scoring_caller_returns_what_it_returned_before():
    from rrpo_hf.evaluation import robustness
    from rrpo_hf.evaluation.audio import RewardModelScorer
    from rrpo_hf.evaluation.scorers import EmotionClassifierScorer

    model, tokens = tiny_rm(label_smoothing=0.2, adv_epsilon=0.3, adv_alpha=0.2), fixed_tokens()
    close = dict(rel=1e-5, abs=1e-6)
    judge = EmotionClassifierScorer(model, "judge", label_smoothing=0.1)(tokens, {"target_emotions": TARGETS})
    for key, values in PINNED["judge"].items():
        assert judge[key].tolist() == pytest.approx(values, **close)
    scorer = RewardModelScorer(model, types.SimpleNamespace(codebook_size=32), batch_size=3, device="cpu")
    scored = scorer.score_tokens(tokens, TARGETS)
    assert scored["rm_predicted"] == PINNED["rm_scorer"]["rm_predicted"]
    assert scored["rm_correct"] == PINNED["rm_scorer"]["rm_correct"]
    for key in ("rm_target_prob", "rm_reward"):
        assert scored[key] == pytest.approx(PINNED["rm_scorer"][key], **close)
    probabilities = robustness._probabilities(model, tokens, 3, "probe", False)
    assert probabilities.flatten().tolist() == pytest.approx(sum(PINNED["probabilities"], []), **close)

    class Progress:
        def update(self, count):
            pass

    predictions = load_evaluate_rm().predict(
        model, tokens, types.SimpleNamespace(max_length=None, batch_size=3), "fixed", Progress()
    )
    assert predictions.tolist() == PINNED["predict"]
    probe = robustness.artifact_sensitivity(
        model, tokens, ["neutral", "sad", "angry", "neutral"], "happy", [30, 31], rate=0.3, show_progress=False
    )
    for key, value in PINNED["artifact"].items():
        assert probe[key] == pytest.approx(value, **close, nan_ok=True), key
    reward = EmotionReward(model)  # the RM's own 0.2 / 0.3 / 0.2, given explicitly when the numbers were captured
    ids, mask = right_pad(tokens, 0)
    probs = F.one_hot(ids, 32).float().requires_grad_(True)
    terms = reward.loss_terms(probs, mask, {"target_emotions": TARGETS})
    (grad,) = torch.autograd.grad(terms["loss"].sum(), probs)
    for key in ("loss", "loss_emo", "loss_adv", "correct"):
        assert terms[key].tolist() == pytest.approx(PINNED["reward"][key], **close), key
    assert float(grad.norm()) == pytest.approx(PINNED["reward_grad_norm"], **close)


# ------------------------------------------------------------------------------------------------ the scripts' path


@pytest.mark.slow
def test_an_rm_from_train_rm_py_is_scored_by_rrpo_py_with_its_own_settings(tmp_path, stage_outputs, caplog):
    """train_rm.py --label_smoothing 0.2 --adv_epsilon 0.3 --adv_alpha 0.2 --adv_epsilon_scale relative saves the
    settings; rrpo.py, given only the folder, computes that L_ser (checked by hand on a step's samples) and records
    the values in the policy's model card; --reward_adv_alpha overrides α and says so."""
    from test_examples_resume import RM_ARGS, rrpo_args, run_example

    own = RobustLossSettings(label_smoothing=0.2, adv_epsilon=0.3, adv_alpha=0.2, adv_epsilon_scale="relative")
    rm_dir = tmp_path / "rm"
    flags = [f"--{key}={value}" for key, value in own.to_dict().items()]
    run_example(
        "train_rm", [*RM_ARGS, "--output_dir", str(rm_dir), "--max_steps", "1", "--save_strategy", "no", *flags]
    )
    saved = json.loads((rm_dir / "config.json").read_text())
    assert {key: saved[key] for key in own.field_names()} == own.to_dict()

    def rrpo(output_dir, *extra):
        argv = rrpo_args(stage_outputs)
        argv[argv.index("--reward_model_path") + 1] = str(rm_dir)
        return run_example("rrpo", [*argv, "--output_dir", str(output_dir), "--max_steps", "1", *extra])

    with caplog.at_level(logging.WARNING, logger="rrpo_hf"):
        trainer = rrpo(tmp_path / "policy")
    assert trainer.emotion_reward.settings == own and trainer.method_name == "RRPO"
    assert not [record for record in caplog.records if "overrides the robust loss" in record.message]
    card = (tmp_path / "policy" / "README.md").read_text()
    for row in ("label smoothing ε (Eq. 2) | 0.2", "ε_adv (Eq. 4) | 0.3", "α (Eq. 5) | 0.2", "radius rule | relative"):
        assert row in card, row

    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    _, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    expected = hand_reward_loss_on(
        trainer.reward_model, outputs["samples"].detach(), batch["speech_attention_mask"], batch["emotion_labels"], own
    )
    torch.testing.assert_close(outputs["loss_ser"].detach(), expected, rtol=1e-5, atol=1e-6)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rrpo_hf"):
        overridden = rrpo(tmp_path / "overridden", "--reward_adv_alpha", "0.5")
    assert overridden.emotion_reward.settings == own.replace(adv_alpha=0.5)
    (record,) = [record for record in caplog.records if "overrides the robust loss" in record.message]
    assert "adv_alpha=0.5 (the reward model's own: 0.2)" in record.message
    assert "α (Eq. 5) | 0.5" in (tmp_path / "overridden" / "README.md").read_text()


# ------------------------------------------------------------------------------------------------ the builder


def test_the_reward_set_is_built_without_a_trainer_and_runs_a_multitask_rms_encoder_once():
    from rrpo_hf.models.robust_ser import RobustMultiTaskRMConfig, RobustSERForMultiTaskReward

    torch.manual_seed(0)
    config = RobustMultiTaskRMConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        tasks=["emotion", "asr", "quality"],
        asr_labels=["a", "b", "c"],
        adv_alpha=0.3,
    )
    model = RobustSERForMultiTaskReward(config).eval()
    rewards = build_reward_set(None, [model], weights=[1.0, 0.5, 0.2], gate="asr", gate_threshold=-5.0)
    assert rewards.names == ["emotion", "asr", "quality"] and rewards.emotion_index == 0 and rewards.gate_index == 1
    assert rewards.emotion_reward.settings == model.config.robust_loss
    rewards.check_policy(SimpleNamespace(speech_token_size=32))
    with pytest.raises(ValueError, match="speech_token_size=64"):
        rewards.check_policy(SimpleNamespace(speech_token_size=64))
    with pytest.raises(ValueError, match="Speech tokenizer mismatch"):
        rewards.check_policy(SimpleNamespace(speech_token_size=32, speech_tokenizer_version="v3"))

    ids, mask = right_pad(fixed_tokens(), 0)
    probs = F.one_hot(ids, 32).float().requires_grad_(True)
    batch = {"target_emotions": TARGETS, "texts": ["a b", "c", "a a b", "b c"]}
    passes = []
    handle = model.robust_ser.encoder.register_forward_hook(lambda module, args, output: passes.append(1))
    shared = rewards.compute(probs, mask, batch)
    assert len(passes) == 1  # three rewards, one encoder pass
    separate = [rewards.terms(func, name, probs, mask, batch) for func, name in zip(rewards.funcs, rewards.names)]
    assert len(passes) == 4
    handle.remove()
    for mine, theirs in zip(shared, separate):
        torch.testing.assert_close(mine["loss"], theirs["loss"])
    (grad_shared,) = torch.autograd.grad(rewards.loss(shared, rewards.gate(shared)), probs)
    (grad_separate,) = torch.autograd.grad(rewards.loss(separate, rewards.gate(separate)), probs)
    torch.testing.assert_close(grad_shared, grad_separate)
