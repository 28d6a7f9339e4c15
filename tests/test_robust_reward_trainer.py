import json
import math

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Sequence, Value

from rrpo_hf.data.labels import CANONICAL_EMOTIONS, UnknownEmotionError
from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
from rrpo_hf.trainers import RobustRewardConfig, RobustRewardTrainer
from rrpo_hf.trainers.robust_reward_trainer import ablation_row


VOCAB = 40


def tiny_config(**overrides) -> RobustSERConfig:
    kwargs = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_dropout=0.0,
    )
    kwargs.update(overrides)
    return RobustSERConfig(**kwargs)


def tiny_args(tmp_path, **overrides) -> RobustRewardConfig:
    kwargs = dict(
        output_dir=str(tmp_path / "rm"),
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        logging_steps=1,
        seed=0,
    )
    kwargs.update(overrides)
    return RobustRewardConfig(**kwargs)


def tiny_dataset(num=24, seed=0, labels=None, features=True) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    rows = {"speech_tokens": [], "emotion": []}
    for i in range(num):
        length = int(torch.randint(6, 20, (1,), generator=generator))
        rows["speech_tokens"].append(torch.randint(0, VOCAB, (length,), generator=generator).tolist())
        rows["emotion"].append(i % len(CANONICAL_EMOTIONS) if labels is None else labels[i % len(labels)])
    if not features:
        return Dataset.from_dict(rows)
    return Dataset.from_dict(
        rows,
        features=Features(
            {"speech_tokens": Sequence(Value("int32")), "emotion": ClassLabel(names=list(CANONICAL_EMOTIONS))}
        ),
    )


def collated_batch(trainer, dataset, size=6):
    return trainer.data_collator([dataset[i] for i in range(size)])


# ----------------------------------------------------------------------------------- loss (Eq. 2-5)


def hand_eq5(model, batch, epsilon, adv_epsilon, alpha):
    """Eq. 2-5 written out with plain tensor ops (no rrpo_hf.ops), on the model's own h' and head."""
    model_inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**model_inputs)
    labels = batch["labels"]
    num_classes = out.logits.shape[-1]
    lam = out.mixup_lambda if "eam_partner" in batch else torch.zeros(len(labels))
    partner = labels[batch["eam_partner"]] if "eam_partner" in batch else labels

    def ls_ce(logits, targets):
        smoothed = torch.full((len(targets), num_classes), epsilon / num_classes)
        smoothed[torch.arange(len(targets)), targets] += 1.0 - epsilon
        return -(smoothed * torch.log_softmax(logits, dim=-1)).sum(-1)

    def eq3(logits):
        return ((1 - lam) * ls_ce(logits, labels) + lam * ls_ce(logits, partner)).mean()

    # the head applied to the returned h' (with dropout 0 this is exactly out.logits)
    loss_emo = eq3(model.classify(out.last_hidden_state, out.attention_mask))
    (grad,) = torch.autograd.grad(loss_emo, out.last_hidden_state, retain_graph=True)
    mask = out.attention_mask.unsqueeze(-1).float()
    grad = grad * mask
    delta = adv_epsilon * grad / grad.flatten(1).norm(dim=1)[:, None, None]
    loss_adv = eq3(model.classify(out.last_hidden_state + delta, out.attention_mask))
    return loss_emo + alpha * loss_adv, loss_emo, loss_adv, lam


def test_loss_equals_hand_computed_eq5(tmp_path):
    torch.manual_seed(0)
    model = RobustSERForAudioClassification(tiny_config())
    args = tiny_args(tmp_path, label_smoothing=0.1, adv_epsilon=0.5, adv_alpha=0.5)
    trainer = RobustRewardTrainer(model=model, args=args, train_dataset=tiny_dataset())
    batch = collated_batch(trainer, trainer.train_dataset)
    assert "eam_partner" in batch  # the default training collator is the EAM collator
    model.train()
    loss = trainer.compute_loss(model, dict(batch))
    expected, loss_emo, loss_adv, lam = hand_eq5(model, batch, 0.1, 0.5, 0.5)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert (lam > 0).any()
    assert trainer._metrics["loss_emo"][-1] == pytest.approx(loss_emo.item(), rel=1e-5)
    assert trainer._metrics["loss_adv"][-1] == pytest.approx(loss_adv.item(), rel=1e-5)
    assert trainer._metrics["mixup_lambda"][-1] == pytest.approx(lam.mean().item(), rel=1e-5)
    # the worst-case perturbation increases the loss
    assert loss_adv.item() > loss_emo.item()


def test_adversarial_gradient_uses_the_same_dropout_mask_as_l_emo(tmp_path):
    # With dropout on, Eq. 4's g must be the gradient of *this step's* L_emo (same dropout mask), not of a resample.
    model = RobustSERForAudioClassification(tiny_config(hidden_dropout_prob=0.3, attention_dropout=0.3))
    trainer = RobustRewardTrainer(model=model, args=tiny_args(tmp_path), train_dataset=tiny_dataset())
    batch = collated_batch(trainer, trainer.train_dataset)
    model.train()
    torch.manual_seed(123)
    loss = trainer.compute_loss(model, dict(batch))
    torch.manual_seed(123)
    expected = hand_eq5(model, batch, 0.1, 0.5, 0.5)[0]
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.manual_seed(124)
    assert not torch.allclose(trainer.compute_loss(model, dict(batch)), expected)  # dropout is really on


def grads_of(trainer, model, batch):
    model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_adversarial_term_changes_encoder_gradients(tmp_path):
    torch.manual_seed(0)
    model = RobustSERForAudioClassification(tiny_config())
    dataset = tiny_dataset()
    with_adv = RobustRewardTrainer(model=model, args=tiny_args(tmp_path, use_eam=False), train_dataset=dataset)
    without_adv = RobustRewardTrainer(
        model=model, args=tiny_args(tmp_path, use_eam=False, adv_alpha=0.0), train_dataset=dataset
    )
    batch = collated_batch(with_adv, with_adv.train_dataset)
    model.train()
    loss_adv, grads_adv = grads_of(with_adv, model, batch)
    loss_plain, grads_plain = grads_of(without_adv, model, batch)
    assert loss_adv > loss_plain
    encoder_names = [name for name in grads_plain if name.startswith("robust_ser.encoder.")]
    assert encoder_names
    # δ flows back through h' into the encoder: every encoder gradient is different
    for name in encoder_names:
        assert not torch.allclose(grads_adv[name], grads_plain[name]), name


def test_alpha_zero_without_ls_and_eam_equals_vanilla_cross_entropy(tmp_path):
    torch.manual_seed(0)
    model = RobustSERForAudioClassification(tiny_config())
    args = tiny_args(tmp_path, label_smoothing=0.0, use_eam=False, adv_alpha=0.0)
    trainer = RobustRewardTrainer(model=model, args=args, train_dataset=tiny_dataset())
    assert ablation_row(args.label_smoothing, args.use_eam, args.adv_alpha).startswith("base")
    batch = collated_batch(trainer, trainer.train_dataset)
    assert "eam_partner" not in batch
    model.train()
    loss, grads = grads_of(trainer, model, batch)

    model.zero_grad(set_to_none=True)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    vanilla = torch.nn.functional.cross_entropy(logits, batch["labels"])
    vanilla.backward()
    torch.testing.assert_close(loss, vanilla.detach())
    for name, param in model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(grads[name], param.grad, msg=name)
    assert "loss_adv" not in trainer._metrics


def test_gradient_accumulation_matches_large_batch(tmp_path):
    dataset = tiny_dataset(num=8)

    def one_update(batch_size, accumulation):
        torch.manual_seed(0)
        model = RobustSERForAudioClassification(tiny_config())
        args = tiny_args(
            tmp_path,
            use_eam=False,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            learning_rate=1e-2,
            lr_scheduler_type="constant",
            optim="sgd",
        )
        trainer = RobustRewardTrainer(model=model, args=args, train_dataset=dataset)
        trainer.train()
        return trainer.state.log_history[0]["loss"], {k: v.detach().clone() for k, v in model.state_dict().items()}

    loss_full, full = one_update(8, 1)
    loss_accumulated, accumulated = one_update(4, 2)
    assert loss_accumulated == pytest.approx(loss_full, rel=1e-4)
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name], rtol=1e-4, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------------- training, eval, saving


@pytest.fixture(scope="module")
def testbed_splits():
    from rrpo_hf.testbed import EmotionWorld, TestbedConfig, make_emotion_corpus

    world = EmotionWorld(TestbedConfig(codebook_size=512))
    alpha = make_emotion_corpus("alpha", num_train=240, num_test=96, world=world, seed=1)
    beta = make_emotion_corpus("beta", num_train=0, num_test=96, world=world, seed=1)
    return alpha["train"], {"alpha": alpha["test"], "beta": beta["test"]}


def test_training_on_testbed_improves_accuracy_and_reports_per_dataset(tmp_path, testbed_splits):
    train, evals = testbed_splits
    torch.manual_seed(0)
    config = tiny_config(vocab_size=512, max_position_embeddings=256, hidden_size=48, intermediate_size=96)
    args = tiny_args(
        tmp_path,
        learning_rate=3e-3,
        num_train_epochs=4,
        per_device_train_batch_size=16,
        logging_steps=5,
        warmup_steps=0.1,
    )
    trainer = RobustRewardTrainer(model=config, args=args, train_dataset=train, eval_dataset=evals)
    before = trainer.evaluate()
    assert set(trainer.eval_results) == {"alpha", "beta"}
    for name in ("alpha", "beta"):
        for key in ("wa", "ua", "macro_f1", "loss"):
            assert f"eval_{name}_{key}" in before
    trainer.train()
    after = trainer.evaluate()
    chance = 1 / len(CANONICAL_EMOTIONS)
    assert after["eval_alpha_wa"] > max(before["eval_alpha_wa"] + 0.15, chance + 0.2), (before, after)
    assert after["eval_alpha_loss"] < before["eval_alpha_loss"]
    assert trainer.eval_results["alpha"]["wa"] == after["eval_alpha_wa"]

    train_logs = [log for log in trainer.state.log_history if "loss" in log and "eval_alpha_wa" not in log]
    assert train_logs and all({"loss_emo", "loss_adv", "mixup_lambda"} <= set(log) for log in train_logs)
    assert all(0 < log["mixup_lambda"] < 1 for log in train_logs)
    # the logged loss is L_ser = L_emo + α·L_adv, averaged over the logging window
    last = train_logs[-1]
    assert last["loss"] == pytest.approx(last["loss_emo"] + 0.5 * last["loss_adv"], rel=0.05)

    # model card + regularization in the config, written on save
    trainer.save_model()
    output_dir = tmp_path / "rm"
    card = (output_dir / "README.md").read_text()
    for text in ("rrpo", "reward-model", "speech-emotion-recognition", "+Adv (RRPO)", "| alpha |", "| beta |"):
        assert text in card, text
    assert f"{100 * after['eval_beta_wa']:.1f}" in card
    saved_config = json.loads((output_dir / "config.json").read_text())
    assert saved_config["adv_alpha"] == 0.5 and saved_config["label_smoothing"] == 0.1
    assert saved_config["use_eam"] is True
    reloaded = RobustSERForAudioClassification.from_pretrained(output_dir)
    batch = trainer.eval_data_collator([evals["alpha"][i] for i in range(4)])
    reloaded.eval(), trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
            trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
        )


def test_model_card_for_push_to_hub_without_hub(tmp_path):
    trainer = RobustRewardTrainer(
        model=tiny_config(),
        args=tiny_args(tmp_path, label_smoothing=0.1, use_eam=True, adv_alpha=0.0, hub_model_id="me/toy-rm"),
        train_dataset=tiny_dataset(),
    )
    trainer.create_model_card(dataset_name="my-corpus")
    card = (tmp_path / "rm" / "README.md").read_text()
    assert "+EAM" in card and "me/toy-rm" in card and "my-corpus" in card
    assert "No evaluation was run." in card
    assert not list((tmp_path / "rm").glob("*.tmp"))  # atomic write leaves no temp file


def test_eval_uses_plain_collator_and_train_uses_eam(tmp_path):
    trainer = RobustRewardTrainer(
        model=tiny_config(), args=tiny_args(tmp_path), train_dataset=tiny_dataset(), eval_dataset=tiny_dataset(seed=1)
    )
    eval_batch = next(iter(trainer.get_eval_dataloader()))
    train_batch = next(iter(trainer.get_train_dataloader()))
    assert "eam_partner" not in eval_batch
    assert "eam_partner" in train_batch


# ----------------------------------------------------------------------------------- bad input


def test_string_and_reordered_labels_are_mapped_to_model_ids(tmp_path):
    # corpus spellings (ESD "Surprise", IEMOCAP "hap") map onto canonical names, then onto the model's ids
    strings = tiny_dataset(num=4, labels=["Surprise", "hap", "angry", "Neutral"], features=False)
    trainer = RobustRewardTrainer(model=tiny_config(), args=tiny_args(tmp_path), train_dataset=strings)
    label2id = trainer.model.config.label2id
    assert trainer.train_dataset["emotion"] == [label2id[n] for n in ("surprised", "happy", "angry", "neutral")]

    reordered = Dataset.from_dict(
        {"speech_tokens": [[1, 2, 3]] * 2, "emotion": [0, 1]},
        features=Features({"speech_tokens": Sequence(Value("int32")), "emotion": ClassLabel(names=["sad", "angry"])}),
    )
    trainer = RobustRewardTrainer(model=tiny_config(), args=tiny_args(tmp_path), train_dataset=reordered)
    assert trainer.train_dataset["emotion"] == [label2id["sad"], label2id["angry"]]


@pytest.mark.parametrize(
    "rows, error, match",
    [
        ({"tokens": [[1, 2]], "emotion": ["sad"]}, ValueError, r"lacks the column\(s\) \['speech_tokens'\]"),
        ({"speech_tokens": [[1, 2]], "label": ["sad"]}, ValueError, r"lacks the column\(s\) \['emotion'\]"),
        ({"speech_tokens": [[1, 2], [3]], "emotion": ["sad", "bored"]}, UnknownEmotionError, "'bored'"),
        ({"speech_tokens": [[1, 2], [3, VOCAB]], "emotion": ["sad", "sad"]}, ValueError, f"token id {VOCAB}"),
        ({"speech_tokens": [[1, 2], [-1]], "emotion": ["sad", "sad"]}, ValueError, "token id -1"),
        (
            {"speech_tokens": [[1, 2], []], "emotion": ["sad", "sad"]},
            ValueError,
            r"empty `speech_tokens` at row\(s\) \[1\]",
        ),
        ({"speech_tokens": [[1] * 65], "emotion": ["sad"]}, ValueError, "max_position_embeddings=64"),
        ({"speech_tokens": [[1, 2]], "emotion": [6]}, ValueError, r"label id\(s\) \[6\]"),
    ],
)
def test_bad_input_raises_clear_error_before_training(tmp_path, rows, error, match):
    with pytest.raises(error, match=match):
        RobustRewardTrainer(model=tiny_config(), args=tiny_args(tmp_path), train_dataset=Dataset.from_dict(rows))


def test_bad_eval_set_is_named_and_max_length_allows_long_sequences(tmp_path):
    bad_eval = {"ok": tiny_dataset(num=4), "broken": Dataset.from_dict({"speech_tokens": [[1]], "emo": ["sad"]})}
    with pytest.raises(ValueError, match=r"eval\['broken'\] dataset lacks"):
        RobustRewardTrainer(model=tiny_config(), args=tiny_args(tmp_path), eval_dataset=bad_eval)
    long = Dataset.from_dict({"speech_tokens": [[1] * 100, [2] * 10], "emotion": ["sad", "angry"]})
    trainer = RobustRewardTrainer(model=tiny_config(), args=tiny_args(tmp_path, max_length=64), train_dataset=long)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["input_ids"].shape[1] == 64


def test_config_validation():
    with pytest.raises(ValueError, match="eam_snr_range"):
        RobustRewardConfig(output_dir="x", eam_snr_range=[5.0, -5.0])
    with pytest.raises(ValueError, match="adv_alpha"):
        RobustRewardConfig(output_dir="x", adv_alpha=-1.0)
    with pytest.raises(ValueError, match="label_smoothing_factor"):
        RobustRewardConfig(output_dir="x", label_smoothing_factor=0.1)
    defaults = RobustRewardConfig(output_dir="x")
    assert (defaults.label_smoothing, defaults.adv_epsilon, defaults.adv_alpha) == (0.1, 0.5, 0.5)
    assert defaults.learning_rate == 1e-5 and defaults.use_eam and defaults.eam_snr_range == [-5.0, 5.0]
    assert not defaults.remove_unused_columns
    assert math.isclose(defaults.eam_probability, 1.0)
