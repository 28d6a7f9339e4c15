"""DiffROTrainer: the DiffRO / RRPO step (gradients, loss, KL), training behaviour, errors, evaluation, export."""

import copy
import os

import pytest
import torch

from rrpo_hf.data.labels import UnknownEmotionError, emotion_label_maps
from rrpo_hf.models.cosyvoice2 import CosyVoice2LM, CosyVoice2LMConfig
from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
from rrpo_hf.ops import fgm_perturbation, mixup_emotion_loss, sample_gumbel_noise
from rrpo_hf.script_utils import ScriptUsageError
from rrpo_hf.testbed import Oracle, OracleScorer, TestbedConfig, build_testbed_tokenizer, make_emotion_corpus
from rrpo_hf.trainers import DiffROConfig, DiffROTrainer


CODEBOOK = 512


@pytest.fixture(scope="module")
def corpus():
    return make_emotion_corpus(language="alpha", num_train=48, num_test=8, codebook_size=CODEBOOK, seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    return build_testbed_tokenizer()


def make_policy(tokenizer, seed=0, codebook=CODEBOOK):
    torch.manual_seed(seed)
    config = CosyVoice2LMConfig(
        llm_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=512,
            tie_word_embeddings=False,
        ),
        speech_token_size=codebook,
    )
    return CosyVoice2LM(config)


def make_reward_model(seed=1, vocab=CODEBOOK, emotions=None, max_positions=256):
    torch.manual_seed(seed)
    kwargs = {}
    if emotions is not None:
        kwargs["id2label"], kwargs["label2id"] = emotion_label_maps(emotions)
    config = RobustSERConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        **kwargs,
    )
    return RobustSERForAudioClassification(config)


@pytest.fixture(scope="module")
def trained_reward_model(corpus):
    """A reward model fitted for a few seconds to the testbed emotions, so its reward is informative."""
    from rrpo_hf.data.collators import DataCollatorForSpeechEmotion

    model = make_reward_model(seed=3)
    collate = DataCollatorForSpeechEmotion(pad_token_id=model.config.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rows = [corpus["train"][i] for i in range(len(corpus["train"]))]
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(40):
        order = torch.randperm(len(rows), generator=generator)[:16].tolist()
        batch = collate([{"speech_tokens": rows[i]["speech_tokens"], "emotion": rows[i]["emotion"]} for i in order])
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def make_args(tmp_path, **overrides):
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-3,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        max_new_tokens=12,
        dataloader_num_workers=0,
    )
    defaults.update(overrides)
    return DiffROConfig(**defaults)


def make_trainer(tmp_path, corpus, tokenizer, policy=None, reward_model=None, **overrides):
    peft_config = overrides.pop("peft_config", None)
    extra = {key: overrides.pop(key) for key in ("judge_model", "eval_scorers", "eval_dataset") if key in overrides}
    return DiffROTrainer(
        model=policy if policy is not None else make_policy(tokenizer),
        reward_model=reward_model if reward_model is not None else make_reward_model(),
        args=make_args(tmp_path, **overrides),
        train_dataset=corpus["train"],
        processing_class=tokenizer,
        peft_config=peft_config,
        **extra,
    )


def first_batch(trainer):
    return trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))


# ------------------------------------------------------------------------------------------------ the step


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_gradient_at_policy_logits_is_the_straight_through_gradient(tmp_path, corpus, tokenizer, temperature):
    trainer = make_trainer(tmp_path, corpus, tokenizer, beta=0.0, reward_adv_alpha=0.5, gumbel_temperature=temperature)
    model = trainer.model
    model.train()
    captured = {}

    def keep_logits(module, inputs, output):
        output.retain_grad()
        captured["z"] = output

    hook = model.llm_decoder.register_forward_hook(keep_logits)
    batch = first_batch(trainer)
    noise_state = trainer._gumbel_generator.get_state()
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    hook.remove()
    samples = outputs["samples"]
    samples.retain_grad()
    loss.backward()

    logits = captured["z"]
    width = batch["speech_ids"].shape[1]
    codebook_logits = logits.detach()[:, :width, :CODEBOOK]
    replay = torch.Generator().manual_seed(0)
    replay.set_state(noise_state)
    noise = sample_gumbel_noise(codebook_logits.shape, generator=replay)
    soft = torch.softmax((codebook_logits + noise) / temperature, dim=-1)
    upstream = samples.grad  # dL/dy from the frozen reward model (Eq. 3-5)
    expected = soft * (upstream - (soft * upstream).sum(-1, keepdim=True)) / temperature
    mask = batch["speech_attention_mask"].bool()
    torch.testing.assert_close(logits.grad[:, :width, :CODEBOOK], expected, rtol=1e-4, atol=1e-7)
    assert upstream[mask].abs().max() > 0
    assert upstream[~mask].abs().max() == 0  # padded frames never reach the reward
    # No gradient on the special ids (eos/fill) nor on the eos-predicting column: they are never sampled.
    assert logits.grad[..., CODEBOOK:].abs().max() == 0
    assert logits.grad[:, width:].abs().max() == 0
    # The reward model stays frozen: gradients flow through it, never into it.
    assert all(p.grad is None for p in trainer.reward_model.parameters())


def test_plain_diffro_loss_equals_reward_model_loss_on_the_sampled_one_hots(tmp_path, corpus, tokenizer):
    trainer = make_trainer(tmp_path, corpus, tokenizer, beta=0.0, reward_adv_alpha=0.0)
    batch = first_batch(trainer)
    loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    mask = batch["speech_attention_mask"]
    sampled = outputs["sampled_ids"]
    assert torch.equal(outputs["samples"].detach(), torch.nn.functional.one_hot(sampled, CODEBOOK).float())
    with torch.no_grad():
        logits = trainer.reward_model(input_ids=sampled, attention_mask=mask).logits
    expected = mixup_emotion_loss(logits, batch["emotion_labels"], epsilon=0.1)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_rrpo_loss_adds_the_adversarial_term(tmp_path, corpus, tokenizer):
    trainer = make_trainer(tmp_path, corpus, tokenizer, beta=0.0, reward_adv_alpha=0.5, reward_adv_epsilon=0.5)
    batch = first_batch(trainer)
    loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    rm, mask, labels = trainer.reward_model, batch["speech_attention_mask"], batch["emotion_labels"]
    out = rm(input_ids=outputs["sampled_ids"], attention_mask=mask)
    hidden = out.last_hidden_state.detach().requires_grad_(True)
    loss_emo = mixup_emotion_loss(rm.classify(hidden, mask), labels, epsilon=0.1, reduction="none")
    (grad,) = torch.autograd.grad(loss_emo.sum(), hidden)
    delta = fgm_perturbation(grad, mask, 0.5)
    loss_adv = mixup_emotion_loss(rm.classify(hidden + delta, mask), labels, epsilon=0.1, reduction="none")
    torch.testing.assert_close(loss.detach(), (loss_emo + 0.5 * loss_adv).mean().detach(), rtol=1e-4, atol=1e-6)
    assert (loss_adv > loss_emo).all()  # the perturbation ascends the loss


def _kl_of(trainer):
    batch = first_batch(trainer)
    lm_inputs = {k: batch[k] for k in ("text_ids", "text_attention_mask", "speech_ids", "speech_attention_mask")}
    from rrpo_hf.ops import token_level_kl

    out = trainer.model(**lm_inputs)
    return token_level_kl(out.logits, trainer._reference_logits(trainer.model, lm_inputs), out.logits_mask).item()


def test_kl_is_zero_against_an_identical_reference_and_positive_after_an_update(tmp_path, corpus, tokenizer):
    trainer = make_trainer(tmp_path, corpus, tokenizer, beta=0.1)
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    assert _kl_of(trainer) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        trainer.model.llm_decoder.weight.add_(0.05 * torch.randn_like(trainer.model.llm_decoder.weight))
    assert _kl_of(trainer) > 1e-4
    assert make_trainer(tmp_path, corpus, tokenizer, beta=0.0).ref_model is None  # β = 0: no reference copy


def test_lora_reference_is_the_disabled_adapter(tmp_path, corpus, tokenizer):
    from peft import LoraConfig

    trainer = make_trainer(
        tmp_path, corpus, tokenizer, beta=0.1, peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    assert trainer.ref_model is None
    assert _kl_of(trainer) == pytest.approx(0.0, abs=1e-6)  # LoRA B starts at zero
    with torch.no_grad():
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)
    assert _kl_of(trainer) > 1e-4


def test_a_trained_adapter_is_its_own_reference_not_the_bare_base_model(tmp_path, corpus, tokenizer):
    """A PeftModel that arrives trained (e.g. LoRA-SFT) starts at its adapter: KL at step 1 is 0 (not KL to base)."""
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(make_policy(tokenizer), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)  # a non-zero adapter: the policy differs from its base model
    trainer = make_trainer(tmp_path, corpus, tokenizer, policy=policy, beta=0.1, max_steps=2)
    assert trainer.ref_adapter_name == "ref" and trainer.ref_model is None
    assert _kl_of(trainer) == pytest.approx(0.0, abs=1e-6)
    from rrpo_hf.ops import token_level_kl

    batch = first_batch(trainer)
    lm_inputs = {k: batch[k] for k in ("text_ids", "text_attention_mask", "speech_ids", "speech_attention_mask")}
    with torch.no_grad():
        out = policy(**lm_inputs)
        with policy.disable_adapter():  # the bare base model, a wrong reference: far from where the policy starts
            assert token_level_kl(out.logits, policy(**lm_inputs).logits, out.logits_mask) > 1e-3
    ref_names = [name for name, _ in policy.named_parameters() if ".ref." in name]
    assert ref_names and not any(policy.get_parameter(name).requires_grad for name in ref_names)
    reference_before = {name: policy.get_parameter(name).detach().clone() for name in ref_names}
    trained_before = {name: p.detach().clone() for name, p in policy.named_parameters() if p.requires_grad}
    assert trained_before and all(".default." in name for name in trained_before)

    trainer.train()
    kl = [entry["kl"] for entry in trainer.state.log_history if "kl" in entry]
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and kl[1] > 0
    assert policy.active_adapter == "default"
    assert all(torch.equal(policy.get_parameter(name), value) for name, value in reference_before.items())
    assert any(not torch.equal(policy.get_parameter(name), value) for name, value in trained_before.items())
    assert {name for name, p in policy.named_parameters() if p.requires_grad} == set(trained_before)

    # The saved result is the trained adapter alone: the frozen "ref" copy is not written beside it.
    trainer.args.save_merged = False
    trainer.save_model(str(tmp_path / "adapter_save"))
    saved = sorted(path.name for path in (tmp_path / "adapter_save").iterdir())
    assert "adapter_model.safetensors" in saved and "ref" not in saved and "model.safetensors" not in saved
    from safetensors.torch import load_file

    saved_keys = load_file(tmp_path / "adapter_save" / "adapter_model.safetensors").keys()
    assert saved_keys and not any(".ref." in key for key in saved_keys)


def test_offline_speech_longer_than_the_reward_model_reads_fails_before_training(tmp_path, corpus, tokenizer):
    lengths = [len(tokens) for tokens in corpus["train"]["speech_tokens"]]
    limit = sorted(lengths)[len(lengths) // 2]
    first_long_row = next(row for row, length in enumerate(lengths) if length > limit)
    with pytest.raises(
        ValueError,
        match=rf"Row {first_long_row} of the train dataset has {lengths[first_long_row]} speech tokens.*"
        rf"max_position_embeddings={limit}.*--max_speech_length {limit}",
    ):
        make_trainer(tmp_path, corpus, tokenizer, reward_model=make_reward_model(max_positions=limit))
    with pytest.raises(ValueError, match=f"max_speech_length={limit + 1} exceeds.*max_position_embeddings={limit}"):
        make_trainer(
            tmp_path,
            corpus,
            tokenizer,
            reward_model=make_reward_model(max_positions=limit),
            max_speech_length=limit + 1,
        )

    # The fix the message names: truncate the long rows to what the reward model reads, and train.
    trainer = make_trainer(
        tmp_path,
        corpus,
        tokenizer,
        reward_model=make_reward_model(max_positions=limit),
        max_speech_length=limit,
        max_steps=1,
    )
    truncated = [len(tokens) for tokens in trainer.train_dataset["speech_tokens"]]
    assert truncated == [min(length, limit) for length in lengths]
    trainer.train()
    assert trainer.state.global_step == 1


def test_online_generation_is_capped_at_what_the_reward_model_reads(tmp_path, corpus, tokenizer, caplog):
    with caplog.at_level("WARNING", logger="rrpo_hf.trainers.diffro_trainer"):
        trainer = make_trainer(
            tmp_path,
            corpus,
            tokenizer,
            reward_model=make_reward_model(max_positions=8),
            rollout="online",
            max_new_tokens=None,
            max_steps=1,
        )
    assert trainer.max_speech_length == 8
    assert "capped at 8 tokens" in caplog.text
    batch = first_batch(trainer)
    rollouts = trainer._generate(batch["text_ids"], batch["text_attention_mask"], trainer._rollout_generator)
    assert max(len(tokens) for tokens in rollouts) == 8  # the ratio rule alone allows 20x the text tokens
    trainer.train()
    assert trainer.state.global_step == 1


# ------------------------------------------------------------------------------------------------ training


def test_seeded_training_run_increases_the_reward(tmp_path, corpus, tokenizer, trained_reward_model):
    trainer = make_trainer(
        tmp_path,
        corpus,
        tokenizer,
        reward_model=trained_reward_model,
        beta=0.0,
        reward_adv_alpha=0.5,
        learning_rate=3e-3,
        max_steps=24,
        per_device_train_batch_size=8,
    )
    trainer.train()
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    assert len(rewards) == 24
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.05, rewards
    logged = next(entry for entry in trainer.state.log_history if "reward" in entry)
    for key in ("loss_emo", "loss_adv", "rm_accuracy", "entropy", "sample_length", "tokens_per_second"):
        assert key in logged
    assert "kl" not in logged  # β = 0


def test_lora_leaves_base_weights_unchanged_and_full_finetuning_changes_them(tmp_path, corpus, tokenizer):
    from peft import LoraConfig

    policy = make_policy(tokenizer)
    base = {k: v.clone() for k, v in policy.state_dict().items()}
    trainer = make_trainer(
        tmp_path, corpus, tokenizer, policy=policy, peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()
    merged_free = trainer.model.get_base_model()
    for name, param in merged_free.named_parameters():
        if "lora_" in name:
            continue
        key = name.replace(".base_layer", "")
        assert torch.equal(param.detach(), base[key]), name
    assert any(
        not torch.equal(p.detach(), lora_before[n]) for n, p in trainer.model.named_parameters() if "lora_" in n
    )

    full_policy = make_policy(tokenizer)
    before = {k: v.clone() for k, v in full_policy.state_dict().items()}
    full = make_trainer(tmp_path, corpus, tokenizer, policy=full_policy)
    full.train()
    changed = [k for k, v in full.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("layers.0.self_attn.q_proj" in k for k in changed)
    assert any("llm_decoder" in k for k in changed)
    # The reference copy and the reward model are frozen.
    ref_state = full.ref_model.state_dict()
    assert all(torch.equal(ref_state[k], before[k]) for k in before)


def test_online_rollout_step_runs_and_logs(tmp_path, corpus, tokenizer):
    trainer = make_trainer(tmp_path, corpus, tokenizer, rollout="online", max_steps=1, max_new_tokens=10)
    trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "reward" in entry)
    assert 1 <= logged["sample_length"] <= 10


# ------------------------------------------------------------------------------------------------ errors


def test_vocabulary_mismatch_is_a_clear_error(tmp_path, corpus, tokenizer):
    with pytest.raises(ValueError, match="Vocabulary mismatch.*speech_token_size=512.*vocab_size=64"):
        make_trainer(tmp_path, corpus, tokenizer, reward_model=make_reward_model(vocab=64))


def test_unknown_target_emotion_is_a_clear_error(tmp_path, corpus, tokenizer):
    with pytest.raises(UnknownEmotionError, match="not labels of the reward model"):
        make_trainer(tmp_path, corpus, tokenizer, reward_model=make_reward_model(emotions=["happy", "sad"]))


def test_target_emotions_are_mapped_through_the_reward_models_label2id(tmp_path, corpus, tokenizer):
    # A reward model whose label order differs from the dataset's ClassLabel order.
    reward_model = make_reward_model(emotions=["sad", "fearful", "happy", "neutral", "angry", "surprised"])
    trainer = make_trainer(tmp_path, corpus, tokenizer, reward_model=reward_model)
    batch = first_batch(trainer)
    names = trainer.reward_model.config.id2label
    assert [names[int(i)] for i in batch["emotion_labels"]] == batch["target_emotions"]


def test_missing_columns_are_clear_errors(tmp_path, corpus, tokenizer):
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['speech_tokens'\].*--rollout online"):
        DiffROTrainer(
            make_policy(tokenizer),
            make_reward_model(),
            make_args(tmp_path),
            train_dataset=corpus["train"].remove_columns("speech_tokens"),
            processing_class=tokenizer,
        )
    # Online rollouts do not need speech tokens.
    DiffROTrainer(
        make_policy(tokenizer),
        make_reward_model(),
        make_args(tmp_path, rollout="online"),
        train_dataset=corpus["train"].remove_columns("speech_tokens"),
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match=r"\['emotion'\]"):
        DiffROTrainer(
            make_policy(tokenizer),
            make_reward_model(),
            make_args(tmp_path),
            train_dataset=corpus["train"].remove_columns("emotion"),
            processing_class=tokenizer,
        )
    with pytest.raises(ValueError, match="processing_class"):
        DiffROTrainer(make_policy(tokenizer), make_reward_model(), make_args(tmp_path), train_dataset=corpus["train"])


def test_config_validates_its_fields(tmp_path):
    with pytest.raises(ValueError, match="rollout"):
        DiffROConfig(output_dir=str(tmp_path), rollout="sometimes")
    with pytest.raises(ValueError, match="reward_adv_epsilon"):
        DiffROConfig(output_dir=str(tmp_path), reward_adv_alpha=0.5, reward_adv_epsilon=0.0)
    with pytest.raises(ValueError, match="beta"):
        DiffROConfig(output_dir=str(tmp_path), beta=-1.0)


# ------------------------------------------------------------------------------------------------ evaluation, saving


def test_evaluation_scores_samples_with_reward_model_judge_and_oracle(tmp_path, corpus, tokenizer):
    oracle = Oracle(TestbedConfig(codebook_size=CODEBOOK))
    trainer = make_trainer(
        tmp_path,
        corpus,
        tokenizer,
        judge_model=make_reward_model(seed=5),
        eval_scorers=[OracleScorer(oracle)],
        eval_dataset=corpus["test"],
    )
    metrics = trainer.evaluate()
    assert metrics["eval_samples"] == len(corpus["test"])
    for key in ("rm_accuracy", "judge_accuracy", "oracle_emotion_correct", "oracle_artifact_rate"):
        assert 0.0 <= metrics[f"eval_{key}"] <= 1.0
    assert metrics["eval_reward"] < 0 and metrics["eval_judge_reward"] < 0
    assert 1 <= metrics["eval_sample_length"] <= 12
    assert "eval_oracle_naturalness" in metrics and "eval_oracle_cer" in metrics
    assert any("eval_reward" in entry for entry in trainer.state.log_history)


def test_save_writes_model_card_and_export_writes_cosyvoice_llm_pt(tmp_path, corpus, tokenizer):
    from peft import LoraConfig

    trainer = make_trainer(
        tmp_path, corpus, tokenizer, peft_config=LoraConfig(r=4, target_modules=["q_proj"]), max_steps=1
    )
    trainer.train()
    trainer.save_model()
    card = open(os.path.join(trainer.args.output_dir, "README.md"), encoding="utf-8").read()
    assert "2512.04552" in card and "2507.05911" in card and "RRPO" in card and "| KL weight β | 0.1 |" in card
    path = trainer.export_cosyvoice(tmp_path / "export" / "llm.pt")
    state = torch.load(path, map_location="cpu")
    merged = copy.deepcopy(trainer.model).merge_and_unload()
    torch.testing.assert_close(
        state["llm.model.model.layers.0.self_attn.q_proj.weight"], merged.model.layers[0].self_attn.q_proj.weight
    )
    assert "llm_decoder.bias" in state
    reloaded = CosyVoice2LM.from_cosyvoice(path, llm_config=merged.config.llm_config)
    torch.testing.assert_close(reloaded.llm_decoder.weight, merged.llm_decoder.weight)


# ------------------------------------------------------------------------------------------------ example script


def _run_example(argv):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "rrpo_example", os.path.join(os.path.dirname(__file__), "..", "examples", "rrpo.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    old_argv, sys.argv = sys.argv, ["rrpo.py", *argv]
    try:
        script_args, training_args, model_args = module.make_parser().parse_args_and_config()
    finally:
        sys.argv = old_argv
    return module.main(script_args, training_args, model_args)


def test_example_tells_which_stage_to_run_first(tmp_path):
    # The script's resolver names the missing folder and the stage that writes it (run_script prints it as one line).
    with pytest.raises(
        ScriptUsageError, match=r"No SFT policy at .*missing_policy.*Run `accelerate launch examples/sft.py` first"
    ):
        _run_example(["--model_name_or_path", str(tmp_path / "missing_policy"), "--output_dir", str(tmp_path / "o")])


@pytest.mark.slow
def test_example_runs_rrpo_on_the_testbed_and_saves_the_policy(tmp_path, tokenizer):
    policy_dir, rm_dir, out_dir = tmp_path / "sft", tmp_path / "rm", tmp_path / "rrpo"
    make_policy(tokenizer).save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)
    make_reward_model().save_pretrained(rm_dir)
    trainer = _run_example(
        [
            "--config",
            os.path.join(os.path.dirname(__file__), "..", "recipes", "toy", "rrpo.yaml"),
            "--model_name_or_path",
            str(policy_dir),
            "--reward_model_path",
            str(rm_dir),
            "--output_dir",
            str(out_dir),
            "--testbed_num_train",
            "32",
            "--testbed_num_test",
            "4",
            "--max_steps",
            "2",
            "--max_new_tokens",
            "8",
            "--per_device_train_batch_size",
            "4",
            "--use_peft",
            "--lora_target_modules",
            "q_proj",
            "--export_cosyvoice",
        ]
    )
    assert trainer.method_name == "RRPO" and trainer.is_peft_model
    reloaded = CosyVoice2LM.from_pretrained(out_dir)  # merged: a plain CosyVoice2LM
    assert reloaded.config.speech_token_size == CODEBOOK
    assert (out_dir / "llm.pt").is_file() and (out_dir / "README.md").is_file()
    assert (out_dir / "eval_results.json").is_file()
