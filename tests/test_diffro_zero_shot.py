"""DiffROTrainer with zero-shot (voice cloning) prompts: the prompt speech reaches generation and the policy pass."""

import pytest
import torch
from test_diffro_trainer import CODEBOOK, first_batch, make_trainer

from rrpo_hf.testbed import build_testbed_tokenizer, make_emotion_corpus
from rrpo_hf.trainers import diffro_trainer


@pytest.fixture(scope="module")
def tokenizer():
    return build_testbed_tokenizer()


@pytest.fixture(scope="module")
def zero_shot_corpus():
    corpus = make_emotion_corpus(language="alpha", num_train=16, num_test=4, codebook_size=CODEBOOK, seed=0)
    train = corpus["train"]
    # Each row is cloned from the previous one: its transcript and its first 6 speech tokens are the prompt.
    prompt_rows = [train[(i - 1) % len(train)] for i in range(len(train))]
    train = train.add_column("prompt_text", [row["text"] for row in prompt_rows])
    train = train.add_column("prompt_speech_tokens", [row["speech_tokens"][:6] for row in prompt_rows])
    return {"train": train, "test": corpus["test"]}


def test_online_step_generates_from_and_teacher_forces_the_prompt_speech(
    tmp_path, zero_shot_corpus, tokenizer, monkeypatch
):
    trainer = make_trainer(tmp_path, zero_shot_corpus, tokenizer, rollout="online", max_steps=1, max_new_tokens=8)
    batch = first_batch(trainer)
    assert batch["prompt_speech_ids"].shape[1] == 6 and batch["prompt_speech_attention_mask"].all()

    generate_calls, forward_calls = [], []
    generate = diffro_trainer.generate_speech_tokens

    def recording_generate(*args, **kwargs):
        generate_calls.append(kwargs)
        return generate(*args, **kwargs)

    monkeypatch.setattr(diffro_trainer, "generate_speech_tokens", recording_generate)
    policy = trainer.model
    forward = policy.forward

    def recording_forward(*args, **kwargs):
        forward_calls.append(kwargs)
        return forward(*args, **kwargs)

    monkeypatch.setattr(policy, "forward", recording_forward)
    policy.train()
    loss = trainer.compute_loss(policy, batch)
    assert torch.isfinite(loss)
    (call,) = generate_calls
    assert torch.equal(call["prompt_speech_ids"], batch["prompt_speech_ids"])
    assert torch.equal(call["text_lengths_for_ratio"], batch["text_ratio_lengths"])
    assert call["exclude_repeated"] is True  # DiffROConfig.ras_exclude_repeated default: upstream's rule
    assert forward_calls and all(
        torch.equal(k["prompt_speech_ids"], batch["prompt_speech_ids"]) for k in forward_calls
    )
