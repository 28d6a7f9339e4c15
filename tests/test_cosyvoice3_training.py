"""SFT, DiffRO and RRPO on a tiny CosyVoice3 policy with the trainers' unchanged API; a v2 reward model on a v3 policy
(or the reverse) fails before the first step, naming both tokenizers."""

import pytest
import torch
from transformers import TrainingArguments

from rrpo_hf import (
    CosyVoice2SFTTrainer,
    CosyVoice3LM,
    DiffROConfig,
    DiffROTrainer,
    build_cosyvoice2_sft_collator,
    build_tiny_cosyvoice3_tokenizer,
    tiny_cosyvoice3_config,
)
from rrpo_hf.data.prompts import instruction_words
from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
from rrpo_hf.models.speech_tokenizer_check import check_speech_tokenizer_match
from rrpo_hf.testbed import TestbedConfig, make_emotion_corpus


CODEBOOK = 512


@pytest.fixture(scope="module")
def corpus():
    return make_emotion_corpus(language="alpha", num_train=24, num_test=4, codebook_size=CODEBOOK, seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    phonemes = [phoneme for spec in TestbedConfig().languages for phoneme in spec.phonemes]
    return build_tiny_cosyvoice3_tokenizer(phonemes + instruction_words("en"))


def make_policy(tokenizer, seed=0) -> CosyVoice3LM:
    torch.manual_seed(seed)
    config = tiny_cosyvoice3_config(
        tokenizer, CODEBOOK, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512,
    )  # fmt: skip
    return CosyVoice3LM(config)


def make_reward_model(version="v3", seed=1):
    torch.manual_seed(seed)
    config = RobustSERConfig(
        vocab_size=CODEBOOK, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=256, speech_tokenizer_version=version,
    )  # fmt: skip
    return RobustSERForAudioClassification(config)


def diffro_args(output_dir, **overrides):
    defaults = dict(
        output_dir=str(output_dir), per_device_train_batch_size=4, learning_rate=1e-3, max_steps=4, logging_steps=1,
        save_strategy="steps", save_steps=2, report_to="none", use_cpu=True, seed=0, max_new_tokens=12,
        dataloader_num_workers=0, reward_adv_alpha=0.5, beta=0.1,
    )  # fmt: skip
    defaults.update(overrides)
    return DiffROConfig(**defaults)


@pytest.mark.slow
def test_rrpo_on_a_cosyvoice3_policy_resumes_exactly(tmp_path, corpus, tokenizer):
    def run(output_dir, resume=None):
        trainer = DiffROTrainer(
            model=make_policy(tokenizer),
            reward_model=make_reward_model(),
            args=diffro_args(output_dir),
            train_dataset=corpus["train"],
            processing_class=tokenizer,
        )
        trainer.train(resume_from_checkpoint=resume)
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry and "reward" in entry]
        return trainer, losses

    full, full_losses = run(tmp_path / "full")
    assert len(full_losses) == 4 and all(torch.isfinite(torch.tensor(full_losses)))
    # the policy read CosyVoice3 prompts: system prompt, instruction, <|endofprompt|>, text
    batch = next(iter(full.get_train_dataloader()))
    first = tokenizer.decode(batch["text_ids"][0][batch["text_attention_mask"][0].bool()])
    assert first.startswith("You are a helpful assistant. Your emotion is") and "<|endofprompt|>" in first
    resumed, resumed_losses = run(tmp_path / "resumed", resume=str(tmp_path / "full" / "checkpoint-2"))
    assert resumed.state.global_step == 4
    assert resumed_losses[-2:] == full_losses[-2:]
    reference = dict(full.model.named_parameters())
    assert all(torch.equal(param, reference[name]) for name, param in resumed.model.named_parameters())


@pytest.mark.slow
def test_online_rollouts_train_and_the_saved_policy_loads_as_cosyvoice3(tmp_path, corpus, tokenizer):
    trainer = DiffROTrainer(
        model=make_policy(tokenizer),
        reward_model=make_reward_model(),
        args=diffro_args(tmp_path, rollout="online", max_steps=1, save_strategy="no"),
        train_dataset=corpus["train"],
        processing_class=tokenizer,
    )
    trainer.train()
    assert torch.isfinite(torch.tensor(trainer.state.log_history[0]["loss"]))
    trainer.save_model()
    from rrpo_hf import load_cosyvoice2_lm_and_tokenizer

    policy, _ = load_cosyvoice2_lm_and_tokenizer(tmp_path)
    assert type(policy) is CosyVoice3LM


@pytest.mark.slow
def test_lora_rrpo_on_cosyvoice3_saves_a_merged_policy_that_exports_upstreams_keys(tmp_path, corpus, tokenizer):
    from peft import LoraConfig

    trainer = DiffROTrainer(
        model=make_policy(tokenizer),
        reward_model=make_reward_model(),
        args=diffro_args(tmp_path, max_steps=2, save_strategy="no"),
        train_dataset=corpus["train"],
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
    )
    trainer.train()
    trainer.save_model()  # merged (save_merged defaults to True)
    exported = torch.load(trainer.export_cosyvoice(str(tmp_path / "release")), weights_only=True)
    assert list(exported)[-2:] == ["llm_decoder.weight", "speech_embedding.weight"]
    assert not [key for key in exported if "lora" in key or key.startswith("llm_embedding")]
    from transformers import AutoModel

    merged = AutoModel.from_pretrained(tmp_path)
    assert type(merged) is CosyVoice3LM
    assert torch.equal(
        merged.model.layers[0].self_attn.q_proj.weight, exported["llm.model.model.layers.0.self_attn.q_proj.weight"]
    )


@pytest.mark.parametrize(("policy_version", "reward_version"), [("v3", "v2"), ("v2", "v3")])
def test_a_reward_model_of_the_other_speech_tokenizer_fails_before_step_one(
    tmp_path, corpus, tokenizer, policy_version, reward_version
):
    from rrpo_hf.testbed import build_testbed_tokenizer
    from rrpo_hf.trainers.builders import build_tiny_cosyvoice2_policy

    if policy_version == "v3":
        policy, text_tokenizer = make_policy(tokenizer), tokenizer
    else:
        text_tokenizer = build_testbed_tokenizer()
        policy = build_tiny_cosyvoice2_policy(text_tokenizer, speech_token_size=CODEBOOK)
    reward_model = make_reward_model(reward_version)
    reward_model.save_pretrained(tmp_path / "rm")  # the version survives a save, as a user's RM folder holds it
    message = rf"policy .* reads S3 tokenizer {policy_version} tokens .* reward_model was trained on {reward_version}"
    with pytest.raises(ValueError, match=message):
        DiffROTrainer(
            model=policy,
            reward_model=str(tmp_path / "rm"),
            args=diffro_args(tmp_path / "out"),
            train_dataset=corpus["train"],
            processing_class=text_tokenizer,
        )


def test_reward_model_folders_without_the_field_read_as_v2(tmp_path):
    import json

    make_reward_model("v2").save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    saved = json.loads(config_file.read_text())
    assert saved["speech_tokenizer_version"] == "v2"
    del saved["speech_tokenizer_version"]  # a folder written before the field existed
    config_file.write_text(json.dumps(saved))
    old = RobustSERForAudioClassification.from_pretrained(tmp_path)
    assert old.config.speech_tokenizer_version == "v2"
    with pytest.raises(ValueError, match="S3 tokenizer v3 tokens .* trained on v2"):
        check_speech_tokenizer_match(make_policy(build_tiny_cosyvoice3_tokenizer(["ka"])).config, old.config)


@pytest.mark.slow
def test_sft_trains_a_cosyvoice3_policy_with_bistream_rows(tmp_path, corpus, tokenizer):
    policy = make_policy(tokenizer)
    collator = build_cosyvoice2_sft_collator(tokenizer, policy.config, bistream_probability=0.5, seed=0)
    assert collator.cosyvoice_version == 3
    batch = collator([corpus["train"][i] for i in range(8)])
    assert bool(batch["bistream"].any())
    labels = batch["labels"]
    eos, fill = policy.config.speech_eos_id, policy.config.speech_fill_id
    assert (eos, fill) == (CODEBOOK + 1, CODEBOOK + 3)
    assert ((labels == eos).sum(dim=1) == 1).all() and bool((labels == fill).any())
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3, learning_rate=3e-3, use_cpu=True,
        report_to="none", save_strategy="no", logging_steps=1, seed=0, remove_unused_columns=False,
    )  # fmt: skip
    before = {name: param.detach().clone() for name, param in policy.named_parameters()}
    trainer = CosyVoice2SFTTrainer(model=policy, args=args, train_dataset=corpus["train"], data_collator=collator)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert any(not torch.equal(before[name], param) for name, param in policy.named_parameters())
    exported = torch.load(policy.save_cosyvoice(str(tmp_path / "release")), weights_only=True)
    assert "llm_embedding.weight" not in exported and "llm_decoder.bias" not in exported


@pytest.mark.slow
def test_sft_then_rrpo_scripts_run_on_a_cosyvoice3_release_folder(tmp_path, corpus, tokenizer):
    """The user's path: a release folder (llm.pt + CosyVoice-BlankEN), a save_to_disk dataset, the example scripts."""
    import importlib.util
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]

    def load(name):
        spec = importlib.util.spec_from_file_location(f"cosyvoice3_{name}_example", repo / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    release = tmp_path / "Fun-CosyVoice3-tiny"
    make_policy(tokenizer).save_cosyvoice(release)
    tokenizer.save_pretrained(release / "CosyVoice-BlankEN")
    corpus.save_to_disk(tmp_path / "data")
    make_reward_model("v3").save_pretrained(tmp_path / "rm")
    common = ["--dataset_name", str(tmp_path / "data"), "--max_steps", "2", "--per_device_train_batch_size", "4"]
    common += ["--report_to", "none", "--use_cpu", "true", "--export_cosyvoice", "true", "--save_strategy", "no"]

    sft = load("sft")
    sft_args = [*common, "--model_name_or_path", str(release), "--output_dir", str(tmp_path / "sft")]
    sft_args += ["--num_generation_samples", "2", "--max_eval_samples", "4", "--remove_unused_columns", "false"]
    sft.main(*sft.make_parser().parse_args_and_config(sft_args))
    sft_policy = torch.load(tmp_path / "sft" / "llm.pt", weights_only=True)
    assert "llm_embedding.weight" not in sft_policy and sft_policy["speech_embedding.weight"].shape[0] == 712

    rrpo = load("rrpo")
    rrpo_args = [*common, "--model_name_or_path", str(tmp_path / "sft"), "--reward_model_path", str(tmp_path / "rm")]
    rrpo_args += ["--output_dir", str(tmp_path / "rrpo"), "--max_eval_samples", "4"]
    rrpo.main(*rrpo.make_parser().parse_args_and_config(rrpo_args))
    from transformers import AutoModel

    policy = AutoModel.from_pretrained(tmp_path / "rrpo")
    assert type(policy) is CosyVoice3LM and policy.config.speech_vocab_size == CODEBOOK + 200
    exported = torch.load(tmp_path / "rrpo" / "llm.pt", weights_only=True)
    assert torch.equal(exported["speech_embedding.weight"], policy.speech_embedding.weight)

    make_reward_model("v2").save_pretrained(tmp_path / "rm_v2")
    rrpo_args[rrpo_args.index(str(tmp_path / "rm"))] = str(tmp_path / "rm_v2")
    with pytest.raises(ValueError, match="reads S3 tokenizer v3 tokens .* trained on v2"):
        rrpo.main(*rrpo.make_parser().parse_args_and_config([*rrpo_args[:-4], "--output_dir", str(tmp_path / "x")]))
