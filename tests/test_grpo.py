"""`CosyVoiceGRPOTrainer`: GRPO's advantages and clipped loss against a hand computation (TRL's formulas), the
log-probabilities of generated tokens, a seeded toy run that raises a token reward, exact resume, reward-output
checks, TRL's config names and defaults."""

import dataclasses
import importlib.metadata
import math

import pytest
import torch
from packaging.version import Version
from test_diffro_trainer import CODEBOOK, corpus, make_policy, make_reward_model, tokenizer  # noqa: F401  (fixtures)
from trl import GRPOConfig

from rrpo_hf import CosyVoiceGRPOConfig, CosyVoiceGRPOTrainer
from rrpo_hf.data.diffro_collator import pad_speech_tokens
from rrpo_hf.ops import aggregate_grpo_loss, group_relative_advantages, grpo_per_token_loss


LOW_IDS = 64


def low_id_share(prompts, completions, completion_ids, **kwargs):
    """The share of speech tokens with an id below 64 (a TRL-style reward over the generated tokens)."""
    return [sum(token < LOW_IDS for token in ids) / max(len(ids), 1) for ids in completion_ids]


def make_args(tmp_path, **overrides):
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=4,
        num_generations=4,
        learning_rate=3e-3,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        max_new_tokens=12,
        dataloader_num_workers=0,
        reward_weights=[0.0, 1.0],
    )
    defaults.update(overrides)
    return CosyVoiceGRPOConfig(**defaults)


def make_trainer(tmp_path, corpus, tokenizer, reward_funcs=(low_id_share,), train_dataset=None, **overrides):  # noqa: F811
    return CosyVoiceGRPOTrainer(
        model=make_policy(tokenizer),
        reward_model=make_reward_model(),
        reward_funcs=list(reward_funcs),
        args=make_args(tmp_path, **overrides),
        train_dataset=corpus["train"] if train_dataset is None else train_dataset,
        processing_class=tokenizer,
    )


# ------------------------------------------------------------------------------------------------ the formulas


def test_group_advantages_match_a_hand_computation():
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0])
    advantages, std = group_relative_advantages(rewards, 4, "group")
    mean, sd = 3.0, math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 3)  # Bessel, as TRL's nanstd
    expected = [(r - mean) / (sd + 1e-4) for r in (1.0, 2.0, 3.0, 6.0)] + [0.0] * 4
    assert advantages.tolist() == pytest.approx(expected, rel=1e-6)
    assert std.tolist() == pytest.approx([sd] * 4 + [0.0] * 4)  # the second group counts in frac_reward_zero_std
    none, _ = group_relative_advantages(rewards, 4, "none")
    assert none.tolist() == pytest.approx([-2.0, -1.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0])
    batch, batch_std = group_relative_advantages(rewards, 4, "batch")
    batch_mean_of_groups = [3.0] * 4 + [5.0] * 4
    all_sd = float(torch.tensor(rewards.tolist()).std())
    assert batch.tolist() == pytest.approx(
        [(r - m) / (all_sd + 1e-4) for r, m in zip(rewards.tolist(), batch_mean_of_groups)]
    )
    assert batch_std.tolist() == pytest.approx([all_sd] * 8)
    with pytest.raises(ValueError, match="groups of num_generations=3"):
        group_relative_advantages(rewards, 3)


def test_clipped_objective_and_each_loss_type_match_a_hand_computation():
    # Two completions of 3 token slots, the second with one padded slot; ratios straddle both clipping bounds.
    logps = torch.tensor([[-1.0, -0.5, -2.0], [-0.2, -1.5, -9.0]])
    old = torch.tensor([[-1.3, -0.5, -1.7], [-0.2, -1.2, -9.0]])
    ref = torch.tensor([[-1.1, -0.4, -2.0], [-0.3, -1.5, -9.0]])
    advantages = torch.tensor([0.7, -1.2])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    eps_low, eps_high, beta = 0.2, 0.28, 0.05

    def token_loss(lp, lo, lr, a):
        ratio = math.exp(lp - lo)
        clipped = min(max(ratio, 1 - eps_low), 1 + eps_high)
        k3 = math.exp(lr - lp) - (lr - lp) - 1
        return -min(ratio * a, clipped * a) + beta * k3

    hand = [
        [token_loss(logps[i, t].item(), old[i, t].item(), ref[i, t].item(), advantages[i].item()) for t in range(3)]
        for i in range(2)
    ]
    per_token, is_clipped, kl = grpo_per_token_loss(logps, old, advantages, eps_low, eps_high, beta, ref)
    assert per_token.tolist() == [pytest.approx(row, rel=1e-6) for row in hand]
    # exp(0.3) = 1.35 > 1.28 with A > 0: clipped; exp(-0.3) = 0.74 < 0.8 with A < 0: clipped.
    assert is_clipped.tolist() == [[True, False, False], [False, True, False]]
    assert kl is not None

    valid = [[hand[i][t] for t in range(3) if mask[i, t]] for i in range(2)]
    expected = {
        "grpo": sum(sum(row) / len(row) for row in valid) / 2,
        "bnpo": sum(map(sum, valid)) / 5,
        "dr_grpo": sum(map(sum, valid)) / (2 * 10),
        "dapo": sum(map(sum, valid)) / 5,
    }
    for loss_type, value in expected.items():
        loss = aggregate_grpo_loss(per_token, mask, loss_type, max_completion_length=10)
        assert loss.item() == pytest.approx(value, rel=1e-6), loss_type
    # DAPO divides by the global batch's tokens per process: 12 tokens over 2 processes here.
    assert aggregate_grpo_loss(per_token, mask, "dapo", num_active_tokens=6.0).item() == pytest.approx(
        sum(map(sum, valid)) / 6
    )


def trl_loss(loss_type, logps, old, ref, advantages, mask, eps_low, eps_high, beta, max_completion_length):
    """TRL's own `GRPOTrainer._compute_loss` on these log-probs: the trainer's state stubbed, one process, eval mode
    (no accumulation scaling), so that the number is TRL's formula itself."""
    from collections import defaultdict
    from types import SimpleNamespace

    from trl import GRPOTrainer

    accelerator = SimpleNamespace(
        num_processes=1, gather=lambda x: x, reduce=lambda x, reduction: x, sync_gradients=True
    )
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        use_vllm=False,
        model=SimpleNamespace(training=False),
        current_gradient_accumulation_steps=1,
        max_completion_length=max_completion_length,
        accelerator=accelerator,
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
    )
    inputs = {
        "prompt_ids": torch.zeros(logps.shape[0], 0, dtype=torch.long),
        "prompt_mask": torch.zeros(logps.shape[0], 0, dtype=torch.long),
        "completion_ids": torch.zeros_like(mask),
        "completion_mask": mask,
        "advantages": advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum().float(),
    }
    return GRPOTrainer._compute_loss(stub, None, inputs).item()


# `_compute_loss` is TRL's private method, stubbed here as trl 1.16 calls it; older releases (the floor, 1.0, in
# `make test-min`) call their helpers differently. The hand computations above hold the definitions at every version.
TRL_STUB_VERSION = "1.16"


@pytest.mark.skipif(
    Version(importlib.metadata.version("trl")) < Version(TRL_STUB_VERSION),
    reason=f"the stub of TRL's private GRPOTrainer._compute_loss follows trl >= {TRL_STUB_VERSION}",
)
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_the_loss_is_trls_on_the_same_batch(loss_type):
    generator = torch.Generator().manual_seed(0)
    logps = -torch.rand(4, 6, generator=generator) * 3
    old = logps + 0.4 * (torch.rand(4, 6, generator=generator) - 0.5)
    ref = logps + 0.3 * (torch.rand(4, 6, generator=generator) - 0.5)
    mask = (torch.arange(6)[None] < torch.tensor([[6], [4], [5], [2]])).long()
    advantages, _ = group_relative_advantages(torch.tensor([0.3, 1.1, -0.2, 0.9]), 2)
    per_token, _, _ = grpo_per_token_loss(logps, old, advantages, 0.2, 0.28, 0.04, ref)
    ours = aggregate_grpo_loss(per_token, mask, loss_type, max_completion_length=6)
    assert ours.item() == pytest.approx(trl_loss(loss_type, logps, old, ref, advantages, mask, 0.2, 0.28, 0.04, 6))


def test_config_keeps_trl_names_and_defaults(tmp_path):
    ours = {f.name: f.default for f in dataclasses.fields(CosyVoiceGRPOConfig)}
    theirs = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    for name in (
        "num_generations",
        "loss_type",
        "beta",
        "epsilon",
        "epsilon_high",
        "scale_rewards",
        "num_iterations",
        "mask_truncated_completions",
        "log_completions",
        "reward_weights",
        "learning_rate",
        "num_completions_to_print",
    ):
        assert ours[name] == theirs[name], name
    with pytest.raises(ValueError, match="multiple of num_generations=4"):
        CosyVoiceGRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, num_generations=4)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        CosyVoiceGRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, loss_type="cispo")


# ------------------------------------------------------------------------------------------------ the trainer


def test_logps_of_generated_tokens_equal_the_step_by_step_forward(tmp_path, corpus, tokenizer):  # noqa: F811
    trainer = make_trainer(tmp_path, corpus, tokenizer)
    batch = trainer._prepare_inputs(trainer.data_collator([corpus["train"][i] for i in range(3)]))
    tokens = trainer._generate(batch["text_ids"], batch["text_attention_mask"], torch.Generator().manual_seed(1))
    speech_ids, speech_mask = pad_speech_tokens(tokens, batch["text_ids"].device)
    truncated = trainer._truncated(tokens, batch)
    targets, mask = trainer._completion_targets(speech_ids, speech_mask, truncated)
    policy = trainer.model.eval()
    with torch.no_grad():
        logps, _ = trainer.completion_logps(policy, trainer._lm_inputs(batch, speech_ids, speech_mask), targets)
        for row, ids in enumerate(tokens):
            # As generation computes them: the prompt once, then one cached step per token.
            keep = batch["text_attention_mask"][row].bool()
            embeds, prompt_mask = policy.embed_prompt(batch["text_ids"][row : row + 1, keep])
            out = policy.model(inputs_embeds=embeds, attention_mask=prompt_mask, use_cache=True)
            expected, cache, attention = [], out.past_key_values, prompt_mask
            for token in [*ids, policy.config.speech_eos_id]:
                step_logps = policy.speech_logits(out.last_hidden_state[:, -1]).float().log_softmax(-1)
                expected.append(step_logps[0, token].item())
                attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
                out = policy.model(
                    inputs_embeds=policy.speech_embedding(torch.tensor([[token]])),
                    attention_mask=attention,
                    position_ids=attention.sum(dim=-1, keepdim=True) - 1,
                    past_key_values=cache,
                    use_cache=True,
                )
                cache = out.past_key_values
            counted = mask[row].sum().item()
            assert counted == len(ids) + (0 if truncated[row] else 1)
            assert logps[row, :counted].tolist() == pytest.approx(expected[:counted], abs=1e-5)


def test_a_reward_with_the_wrong_shape_fails_at_init(tmp_path, corpus, tokenizer):  # noqa: F811
    def one_number(prompts, completions, completion_ids, **kwargs):
        return [1.0]

    with pytest.raises(ValueError, match=r"'one_number' returned 1 rewards for 2 completions"):
        make_trainer(tmp_path, corpus, tokenizer, reward_funcs=[one_number])

    def diffro_style(token_probs, attention_mask, batch):
        return token_probs.sum(dim=(1, 2))

    with pytest.raises(
        TypeError, match=r"'diffro_style' does not take \['prompts', 'completions', 'completion_ids'\]"
    ):
        make_trainer(tmp_path, corpus, tokenizer, reward_funcs=[diffro_style])


@pytest.mark.slow
def test_grpo_raises_a_token_reward_on_a_seeded_toy_run(tmp_path, corpus, tokenizer):  # noqa: F811
    trainer = make_trainer(tmp_path, corpus, tokenizer, max_steps=12, learning_rate=1e-2, log_completions=True)
    prompts = trainer._prepare_inputs(trainer.data_collator([corpus["test"][i] for i in range(8)]))

    def share():
        values = []
        for seed in range(3):
            tokens = trainer._generate(
                prompts["text_ids"], prompts["text_attention_mask"], torch.Generator().manual_seed(seed)
            )
            values += low_id_share(None, tokens, tokens)
        return sum(values) / len(values)

    before = share()
    trainer.train()
    after = share()
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert {"reward_std", "frac_reward_zero_std", "rewards/low_id_share/mean", "clip_ratio/region_mean"} <= set(
        logs[0]
    )
    print("low-id share before, after:", before, after)
    assert after > before + 0.2, (before, after)
    assert list((tmp_path / "out" / "completions").glob("completions_*.parquet"))


@pytest.mark.slow
def test_resume_is_exact(tmp_path, corpus, tokenizer):  # noqa: F811
    # 4 prompts, 2 per step: an epoch is 2 steps, so the resumed run (steps 3 to 6) crosses two epoch boundaries.
    prompts = corpus["train"].select(range(4))

    def run(output_dir, resume=None):
        trainer = make_trainer(
            output_dir,
            corpus,
            tokenizer,
            train_dataset=prompts,
            max_steps=6,
            save_strategy="steps",
            save_steps=2,
            beta=0.04,
        )
        trainer.train(resume_from_checkpoint=resume)
        losses = [entry["loss"] for entry in trainer.state.log_history if "reward" in entry]
        return trainer, losses

    full, full_losses = run(tmp_path / "full")
    checkpoint = tmp_path / "full" / "out" / "checkpoint-2"
    assert full.state.epoch == 3
    assert (checkpoint / "grpo_rng_state_0.pth").is_file()
    resumed, resumed_losses = run(tmp_path / "resumed", resume=str(checkpoint))
    assert len(resumed_losses) == 6 and resumed_losses[2:] == full_losses[2:]  # steps 3-6 ran after the resume
    reference = dict(full.model.named_parameters())
    assert all(torch.equal(param, reference[name]) for name, param in resumed.model.named_parameters())
    full.save_model()
    card = (tmp_path / "full" / "out" / "README.md").read_text()
    assert "Method: **GRPO-robust**" in card  # the default test RM has α = 0.5
    assert "num_generations G" in card
    assert full.export_cosyvoice(tmp_path / "llm.pt") is not None


@pytest.mark.slow
def test_example_script_trains_a_lora_policy_on_saved_folders(tmp_path, tokenizer):  # noqa: F811
    import importlib.util
    import os
    import sys

    from test_diffro_rewards import make_multitask_rm

    folders = {name: tmp_path / name for name in ("sft", "rm", "mt")}
    make_policy(tokenizer).save_pretrained(folders["sft"])
    tokenizer.save_pretrained(folders["sft"])
    make_reward_model(seed=1).save_pretrained(folders["rm"])
    make_multitask_rm().save_pretrained(folders["mt"])
    repo = os.path.join(os.path.dirname(__file__), "..")
    spec = importlib.util.spec_from_file_location("grpo_example", os.path.join(repo, "examples", "grpo.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    argv = ["--config", os.path.join(repo, "recipes", "toy", "grpo.yaml")]
    argv += ["--model_name_or_path", str(folders["sft"]), "--reward_model_path", str(folders["rm"])]
    argv += ["--reward_funcs", str(folders["mt"]), "--reward_weights", "1.0", "0.5", "0.2"]
    argv += ["--output_dir", str(tmp_path / "out"), "--testbed_num_train", "16", "--testbed_num_test", "4"]
    argv += ["--max_steps", "2", "--logging_steps", "1", "--max_new_tokens", "8", "--per_device_train_batch_size", "8"]
    argv += ["--use_peft", "true", "--lora_target_modules", "q_proj", "v_proj", "--beta", "0.04", "--eval_kl", "true"]
    argv += ["--evaluate_before_training", "false", "--export_cosyvoice", "true"]
    script_args, training_args, model_args = module.make_parser().parse_args_and_config(argv)
    trainer = module.main(script_args, training_args, model_args)
    assert trainer.is_peft_model and trainer.reward_func_names == ["emotion", "asr", "quality"]
    logged = [entry for entry in trainer.state.log_history if "rewards/asr/mean" in entry]
    assert len(logged) == 2 and all("kl" in entry and "frac_reward_zero_std" in entry for entry in logged)
    assert "eval_oracle_emotion_score" in trainer.eval_results["eval"]
    assert "eval_sqrt_kl_to_reference" in trainer.eval_results["eval"]
    assert (tmp_path / "out" / "config.json").is_file() and (tmp_path / "out" / "llm.pt").is_file()


def test_a_cosyvoice3_policy_trains_and_its_eos_is_scored(tmp_path):
    from test_cosyvoice3_training import make_policy as make_cosyvoice3_policy
    from test_cosyvoice3_training import make_reward_model as make_v3_reward_model

    from rrpo_hf.data.prompts import instruction_words
    from rrpo_hf.models.cosyvoice3 import build_tiny_cosyvoice3_tokenizer
    from rrpo_hf.testbed import TestbedConfig, make_emotion_corpus

    phonemes = [phoneme for spec in TestbedConfig().languages for phoneme in spec.phonemes]
    v3_tokenizer = build_tiny_cosyvoice3_tokenizer(phonemes + instruction_words("en"))
    prompts = make_emotion_corpus(language="alpha", num_train=8, num_test=2, codebook_size=CODEBOOK, seed=0)["train"]
    trainer = CosyVoiceGRPOTrainer(
        model=make_cosyvoice3_policy(v3_tokenizer),
        reward_model=make_v3_reward_model(),
        reward_funcs=[low_id_share],
        args=make_args(tmp_path),
        train_dataset=prompts,
        processing_class=v3_tokenizer,
    )
    speech_ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    targets, counted = trainer._completion_targets(speech_ids, mask, torch.tensor([False, True]))
    eos = trainer.policy_config.speech_eos_id
    assert eos == CODEBOOK + 1  # CosyVoice3: sos = V, eos = V + 1
    assert targets.tolist() == [[5, 6, 7, eos], [8, 9, eos, 0]]
    assert counted.tolist() == [[True] * 4, [True, True, False, False]]  # the cut completion drew no stop token
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(logs) == 2 and all("frac_reward_zero_std" in entry for entry in logs)
