import pytest
import torch

from rrpo_hf.models.cosyvoice2.configuration_cosyvoice2 import CosyVoice2LMConfig
from rrpo_hf.models.cosyvoice2.generation import (
    count_target_text_tokens,
    generate_speech_tokens,
    ras_sampling,
    unwrap_for_generation,
)
from rrpo_hf.models.cosyvoice2.modeling_cosyvoice2 import CosyVoice2LM


SPEECH_TOKEN_SIZE = 20  # stop ids 20, 21, 22
PROMPTS = [[3, 4, 5], [6, 7], [8, 9, 10, 11, 12], [13]]


def tiny_policy(seed: int = 0, **config_kwargs) -> CosyVoice2LM:
    torch.manual_seed(seed)
    config = CosyVoice2LMConfig(
        llm_config=dict(
            vocab_size=40,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        ),
        speech_token_size=SPEECH_TOKEN_SIZE,
        **config_kwargs,
    )
    return CosyVoice2LM(config).eval()


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


def bias_stop_ids(model: CosyVoice2LM, value: float) -> CosyVoice2LM:
    with torch.no_grad():
        model.llm_decoder.bias[SPEECH_TOKEN_SIZE:] = value
    return model


# -- ras_sampling -------------------------------------------------------------------------------------------------
def test_ras_nucleus_keeps_top_p_prefix_and_top_k():
    generator = torch.Generator().manual_seed(0)
    # probs 0.5 / 0.3 / 0.2: the mass before the third id is 0.8, not < 0.8, so it is never a candidate.
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log().expand(2000, 3)
    draws = ras_sampling(logits, generator=generator)
    assert set(draws.tolist()) == {0, 1}
    assert 0.55 < (draws == 0).float().mean() < 0.70  # renormalised 0.5 / 0.8 = 0.625

    # 100 nearly uniform ids, strictly decreasing: only the 25 most likely may be drawn.
    logits = torch.linspace(0.0, -0.01, 100).expand(4000, 100)
    draws = ras_sampling(logits, top_p=1.0, top_k=25, generator=generator)
    assert draws.max() < 25 and len(set(draws.tolist())) == 25


def test_ras_resamples_from_full_softmax_when_choice_repeats():
    generator = torch.Generator().manual_seed(0)
    # id 0 holds 0.9 > top_p, so nucleus sampling can only return it; the full softmax gives id 1 mass 0.1.
    logits = torch.tensor([[0.9, 0.1]]).log().expand(4000, 2)
    no_history = ras_sampling(logits, generator=generator)
    assert (no_history == 0).all()

    history_without_zero = torch.full((4000, 10), 1)
    assert (ras_sampling(logits, history_without_zero, generator=generator) == 0).all()

    history_with_zero = torch.full((4000, 10), 1)
    history_with_zero[:, -1] = 0
    # Upstream's rule (default): the repeated id is excluded from the re-draw, so id 0 is never picked again.
    resampled = ras_sampling(logits, history_with_zero, generator=generator)
    assert (resampled == 1).all()
    # The pre-2026 rule re-draws from the full softmax including id 0: it comes back about 90% of the time.
    resampled = ras_sampling(logits, history_with_zero, exclude_repeated=False, generator=generator)
    assert 0.87 < (resampled == 0).float().mean() < 0.93

    # Only the last win_size tokens count: a 0 eleven steps back does not trigger resampling.
    old_zero = torch.full((4000, 11), 1)
    old_zero[:, 0] = 0
    assert (ras_sampling(logits, old_zero, win_size=10, generator=generator) == 0).all()
    # Negative entries are padding and never match.
    assert (ras_sampling(logits, torch.full((4000, 10), -1), generator=generator) == 0).all()


def test_ras_threshold_scales_with_tau_r():
    generator = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.9, 0.1]]).log().expand(2000, 2)
    history = torch.full((2000, 10), 1)
    history[:, -2:] = 0  # two repeats in the window
    assert (ras_sampling(logits, history, tau_r=0.3, generator=generator) == 0).all()  # needs 3
    assert (ras_sampling(logits, history, tau_r=0.2, generator=generator) == 1).any()  # needs 2


def test_ras_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        ras_sampling(torch.zeros(5))
    with pytest.raises(ValueError, match="top_p"):
        ras_sampling(torch.zeros(1, 5), top_p=0.0)
    with pytest.raises(ValueError, match="top_k"):
        ras_sampling(torch.zeros(1, 5), top_k=0)
    with pytest.raises(ValueError, match="-inf"):
        ras_sampling(torch.full((1, 5), float("-inf")))


# -- generate_speech_tokens ---------------------------------------------------------------------------------------
def test_cached_equals_uncached_greedy(policy):
    cached = generate_speech_tokens(policy, PROMPTS, do_sample=False, max_len_ratio=8.0)
    uncached = generate_speech_tokens(policy, PROMPTS, do_sample=False, max_len_ratio=8.0, use_cache=False)
    assert cached == uncached
    assert all(len(tokens) > 0 for tokens in cached)


def test_batched_equals_one_at_a_time_greedy(policy):
    batched = generate_speech_tokens(policy, PROMPTS, do_sample=False)
    single = [generate_speech_tokens(policy, [prompt], do_sample=False)[0] for prompt in PROMPTS]
    assert batched == single


def test_padding_side_of_input_does_not_matter(policy):
    # The same prompts as a right-padded tensor and as a left-padded tensor.
    width = max(map(len, PROMPTS))
    right = torch.zeros(len(PROMPTS), width, dtype=torch.long)
    right_mask = torch.zeros_like(right)
    left, left_mask = right.clone(), right_mask.clone()
    for i, prompt in enumerate(PROMPTS):
        right[i, : len(prompt)], right_mask[i, : len(prompt)] = torch.tensor(prompt), 1
        left[i, width - len(prompt) :], left_mask[i, width - len(prompt) :] = torch.tensor(prompt), 1
    expected = generate_speech_tokens(policy, PROMPTS, do_sample=False)
    assert generate_speech_tokens(policy, right, right_mask, do_sample=False) == expected
    assert generate_speech_tokens(policy, left, left_mask, do_sample=False) == expected


def test_sampled_lengths_within_bounds_and_no_stop_ids(policy):
    outputs = generate_speech_tokens(policy, PROMPTS * 4, seed=0, min_len_ratio=2.0, max_len_ratio=6.0)
    for prompt, tokens in zip(PROMPTS * 4, outputs):
        assert 2 * len(prompt) <= len(tokens) <= 6 * len(prompt)
        assert all(0 <= t < SPEECH_TOKEN_SIZE for t in tokens)


def test_stop_ids_end_generation_exactly_at_min_len():
    # Every stop id (eos and the two extra ones) is far more likely than speech: each sample stops as soon
    # as stopping is allowed, and the stop id is not returned.
    model = bias_stop_ids(tiny_policy(), 30.0)
    outputs = generate_speech_tokens(model, PROMPTS, seed=0, min_len_ratio=3.0, max_len_ratio=20.0)
    assert [len(tokens) for tokens in outputs] == [3 * len(p) for p in PROMPTS]
    assert all(t < SPEECH_TOKEN_SIZE for tokens in outputs for t in tokens)
    # With a non-eos stop id dominating, generation still stops.
    with torch.no_grad():
        model.llm_decoder.bias[SPEECH_TOKEN_SIZE] = -30.0
    assert [len(t) for t in generate_speech_tokens(model, PROMPTS, do_sample=False)] == [2 * len(p) for p in PROMPTS]


def test_never_stopping_sample_is_cut_at_max_len():
    model = bias_stop_ids(tiny_policy(), -30.0)
    outputs = generate_speech_tokens(model, PROMPTS, seed=1, max_len_ratio=5.0)
    assert [len(tokens) for tokens in outputs] == [5 * len(p) for p in PROMPTS]
    outputs = generate_speech_tokens(model, PROMPTS, seed=1, max_new_tokens=7)
    assert [len(tokens) for tokens in outputs] == [7] * len(PROMPTS)


def test_seed_makes_sampling_deterministic(policy):
    first = generate_speech_tokens(policy, PROMPTS, seed=123)
    assert generate_speech_tokens(policy, PROMPTS, seed=123) == first
    generator = torch.Generator().manual_seed(123)
    assert generate_speech_tokens(policy, PROMPTS, generator=generator) == first
    others = [generate_speech_tokens(policy, PROMPTS, seed=s) for s in range(1, 4)]
    assert any(other != first for other in others)


def test_instruction_tokens_do_not_count_towards_length_bounds():
    end = 39  # plays <|endofprompt|>
    ids = torch.tensor([[5, 6, end, 7, 8, 9], [5, end, 7, 0, 0, 0], [7, 8, 0, 0, 0, 0]])
    mask = (torch.arange(6) < torch.tensor([[6], [3], [2]])).long()
    assert count_target_text_tokens(ids, mask, end).tolist() == [3, 1, 2]
    assert count_target_text_tokens(ids, mask).tolist() == [6, 3, 2]

    model = bias_stop_ids(tiny_policy(), -30.0)
    outputs = generate_speech_tokens(model, ids, mask, seed=0, max_len_ratio=4.0, prompt_end_token_id=end)
    assert [len(t) for t in outputs] == [12, 4, 8]
    outputs = generate_speech_tokens(model, ids, mask, seed=0, max_len_ratio=4.0, text_lengths_for_ratio=[1, 2, 3])
    assert [len(t) for t in outputs] == [4, 8, 12]


def test_generation_restores_training_mode_and_works_through_peft(policy):
    from peft import LoraConfig, get_peft_model

    expected = generate_speech_tokens(policy, PROMPTS, do_sample=False)
    peft_model = get_peft_model(tiny_policy(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.train()
    # LoRA's B matrices start at zero, so the adapted policy decodes like the base one.
    assert generate_speech_tokens(peft_model, PROMPTS, do_sample=False) == expected
    assert peft_model.training


def test_unwrap_for_generation_with_accelerator(policy):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    accelerator = Accelerator(cpu=True)
    try:
        prepared = accelerator.prepare(tiny_policy())
        with unwrap_for_generation(prepared, accelerator) as unwrapped:
            assert isinstance(unwrapped, CosyVoice2LM)
            outputs = generate_speech_tokens(unwrapped, PROMPTS, do_sample=False)
        assert outputs == generate_speech_tokens(policy, PROMPTS, do_sample=False)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_bad_input_raises_clear_errors(policy):
    with pytest.raises(ValueError, match="no text tokens"):
        generate_speech_tokens(policy, torch.tensor([[1, 2], [3, 4]]), torch.tensor([[1, 1], [0, 0]]))
    with pytest.raises(ValueError, match="text vocabulary"):
        generate_speech_tokens(policy, [[1, 999]])
    with pytest.raises(ValueError, match="shape"):
        generate_speech_tokens(policy, torch.tensor([[1, 2]]), torch.tensor([[1, 1, 1]]))
    with pytest.raises(ValueError, match="integer"):
        generate_speech_tokens(policy, torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="either `generator` or `seed`"):
        generate_speech_tokens(policy, [[1, 2]], seed=0, generator=torch.Generator())
    with pytest.raises(ValueError, match="max_len < 1"):
        generate_speech_tokens(policy, [[1, 2]], max_len_ratio=0.1)
    with pytest.raises(ValueError, match="entries for a batch"):
        generate_speech_tokens(policy, [[1, 2]], text_lengths_for_ratio=[1, 2])
    with pytest.raises(TypeError, match="unwrap_for_generation"):
        generate_speech_tokens(torch.nn.Linear(2, 2), [[1, 2]])
    assert generate_speech_tokens(policy, []) == []


# Tokens recorded from the per-step-concatenating decoder (before the preallocated KV cache and mask). They pin
# CosyVoice2's sampling exactly: the same seed must consume the generator identically (the same torch.multinomial
# calls, shapes and order) and give these tokens, so a speed-up of the decode loop cannot silently change outputs.
GOLDEN_PROMPT_SPEECH = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10], [11], [12, 13], [14, 15, 16], [17]]
GOLDEN_DEFAULT = [
    [15, 3, 2, 15, 10, 17, 19, 0, 1, 5, 14, 5, 18, 2, 12, 12, 6, 11, 8, 5, 12],
    [18, 17, 16, 9, 19, 10, 6],
    [19, 9, 0, 15, 10, 4, 5, 8, 11, 2],
    [12, 16, 1, 18],
    [13, 17, 10, 19, 1, 7],
    [12, 9, 5, 15, 18, 11],
    [18, 17, 6, 3, 1, 4, 12, 7, 19, 15, 0, 2, 13],
    [8, 1, 4, 1, 11, 14, 19, 2, 3, 10, 19, 18],
]
GOLDEN_NO_EXCLUDE = [
    [15, 3, 2, 15, 10, 17, 19, 4, 9],
    [18, 17, 17, 19, 5, 14, 19, 13],
    [19, 9, 0, 9, 15, 1, 9, 14, 7, 4, 2, 17, 11, 12, 6, 14, 9, 19, 10, 13, 19, 15],
    [12, 16, 1, 18],
    [13, 17, 10, 19, 1, 7],
    [12, 9, 5, 15, 18, 11],
    [18, 17, 6, 3, 1, 4, 12, 3, 0, 15, 9, 14, 18, 17, 1, 11],
    [8, 1, 4, 1, 11, 14, 6, 18],
]
GOLDEN_ZERO_SHOT = [
    [16, 15, 0, 19, 19, 8],
    [11, 15, 18, 7, 5],
    [18, 1, 19, 16, 17, 6, 2, 9, 13, 19, 3, 18, 7, 4, 1, 5, 11, 16],
    [3, 8, 1, 4],
    [19, 10, 1, 11, 9, 14],
    [16, 4, 5, 6, 11],
    [7, 1, 13, 5, 2, 11, 10, 18, 3, 16, 17, 4, 17, 1, 7, 12, 6],
    [14, 1, 4, 3, 5, 17, 6, 19, 18, 3, 9, 2, 13, 0, 12, 1, 12, 14, 4, 19],
]
GOLDEN_ZERO_SHOT_NO_EXCLUDE = [
    [16, 15, 0, 19, 19, 8],
    [11, 15, 18, 7, 5],
    [18, 1, 19, 16, 17, 6, 2, 9, 13, 19, 3, 18, 7, 4, 1, 5, 11, 17, 15],
    [3, 8, 1, 4],
    [19, 10, 1, 11, 9, 14],
    [16, 4, 5, 6, 11],
    [7, 1, 13, 5, 2, 11, 10, 18, 3, 16, 17, 4, 17, 1, 7, 12, 6],
    [14, 1, 4, 3, 5, 17, 6, 19, 18, 3, 9, 2, 13, 0, 12, 9, 8, 1, 7, 3],
]


@pytest.mark.parametrize(
    "zero_shot, exclude_repeated, seed, expected",
    [
        (False, True, 1234, GOLDEN_DEFAULT),
        (False, False, 1234, GOLDEN_NO_EXCLUDE),
        (True, True, 99, GOLDEN_ZERO_SHOT),
        (True, False, 99, GOLDEN_ZERO_SHOT_NO_EXCLUDE),
    ],
)
def test_sampled_tokens_match_recorded_golden(zero_shot, exclude_repeated, seed, expected):
    # A freshly seeded tiny policy and a ragged batch (left padding, samples stopping at different steps).
    outputs = generate_speech_tokens(
        tiny_policy(),
        PROMPTS * 2,
        seed=seed,
        exclude_repeated=exclude_repeated,
        prompt_speech_ids=GOLDEN_PROMPT_SPEECH if zero_shot else None,
    )
    assert outputs == expected
