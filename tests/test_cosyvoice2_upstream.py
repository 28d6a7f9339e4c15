"""The upstream CosyVoice2 rules we follow (see docs/cosyvoice2.md), each against a hand-checked toy case."""

import inspect

import pytest
import torch
from test_generation import SPEECH_TOKEN_SIZE
from test_generation import tiny_policy as generation_tiny_policy

from rrpo_hf.data.diffro_collator import DataCollatorForDiffRO
from rrpo_hf.data.speech_lm_collator import IGNORE_INDEX, DataCollatorForCosyVoice2
from rrpo_hf.models.cosyvoice2 import generation
from rrpo_hf.models.cosyvoice2.generation import generate_speech_tokens, ras_sampling
from rrpo_hf.models.cosyvoice2.modeling_cosyvoice2 import CosyVoice2LM
from rrpo_hf.models.cosyvoice2.tokenization import build_tiny_cosyvoice2_tokenizer


# SPEECH_TOKEN_SIZE = 20: eos 20, unused stop 21, fill 22

EOS, FILL = 20, 22


def tiny_policy(seed: int = 0, text_chunk: int = 2, speech_chunk: int = 3) -> CosyVoice2LM:
    return generation_tiny_policy(seed, bistream_text_chunk=text_chunk, bistream_speech_chunk=speech_chunk)


def embed_sequence(model, items):
    """Embeddings of a hand-written sequence of ("sos"|"task", None) / ("text"|"speech", id) items."""
    rows = []
    for kind, value in items:
        if kind == "sos":
            rows.append(model.llm_embedding.weight[model.config.sos_id])
        elif kind == "task":
            rows.append(model.llm_embedding.weight[model.config.task_id])
        elif kind == "text":
            rows.append(model.model.embed_tokens.weight[value])
        else:
            rows.append(model.speech_embedding.weight[value])
    return torch.stack(rows)[None]


# -- repetition-aware sampling ----------------------------------------------------------------------------------
def test_ras_excludes_the_repeated_id_by_default_and_keeps_the_old_rule_as_an_option():
    generator = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.9, 0.05, 0.05]]).log().expand(5000, 3)
    history = torch.zeros(5000, 10, dtype=torch.long)  # id 0 fills the window: every nucleus draw repeats
    new_rule = ras_sampling(logits, history, generator=generator)
    assert not (new_rule == 0).any()
    assert 0.45 < (new_rule == 1).float().mean() < 0.55  # the re-draw renormalises 0.05 / 0.05
    old_rule = ras_sampling(logits, history, exclude_repeated=False, generator=generator)
    assert 0.88 < (old_rule == 0).float().mean() < 0.92


def test_ras_keeps_the_repeated_id_when_nothing_else_is_allowed():
    logits = torch.tensor([[0.0, float("-inf"), float("-inf")]])
    assert ras_sampling(logits, torch.zeros(1, 10, dtype=torch.long)).tolist() == [0]


def test_generation_default_follows_the_new_rule_and_the_option_reaches_the_sampler():
    policy = tiny_policy()
    with torch.no_grad():  # make speech id 5 dominate every step: only RAS can break the loop
        policy.llm_decoder.weight.zero_()
        policy.llm_decoder.bias.fill_(-5.0)
        policy.llm_decoder.bias[5] = 5.0
    text = [[3, 4, 5, 6, 7]]
    new = generate_speech_tokens(policy, text, min_new_tokens=40, max_new_tokens=40, seed=0)[0]
    old = generate_speech_tokens(policy, text, min_new_tokens=40, max_new_tokens=40, seed=0, exclude_repeated=False)[0]
    # New rule: after the first 5, a repeated 5 is always replaced, so 5 never follows 5 within the window.
    assert all(not (a == 5 and b == 5) for a, b in zip(new, new[1:]))
    # Old rule: the re-draw puts ~all its mass back on 5 (p > 0.99), so 5 keeps repeating.
    assert old.count(5) > 35


# -- min_len ---------------------------------------------------------------------------------------------------
def test_every_stop_id_is_masked_before_min_len_even_the_fill_id():
    policy = tiny_policy()
    with torch.no_grad():  # the fill id (which a bistream-trained LM emits) is by far the most likely token
        policy.llm_decoder.bias[FILL] = 50.0
    tokens = generate_speech_tokens(policy, [[3, 4, 5]], min_len_ratio=2.0, max_len_ratio=20.0, seed=0)[0]
    assert len(tokens) == 6 and all(t < SPEECH_TOKEN_SIZE for t in tokens)  # stops on the fill id at min_len


# -- bistream --------------------------------------------------------------------------------------------------
def upstream_bistream_layout(text, speech, text_chunk, speech_chunk):
    """Upstream's `prepare_lm_input_target` bistream branch, written out on lists: (input items, targets)."""
    items, targets = [("sos", None)], [IGNORE_INDEX]
    for j in range(-(-(len(text) + 1) // text_chunk)):
        text_part = text[j * text_chunk : (j + 1) * text_chunk]
        if len(text_part) == text_chunk:
            speech_part = speech[j * speech_chunk : (j + 1) * speech_chunk]
            targets += [IGNORE_INDEX] * (text_chunk - 1) + speech_part + [FILL]
            items += [("text", t) for t in text_part] + [("speech", s) for s in speech_part]
        else:
            rest = speech[j * speech_chunk :]
            targets += [IGNORE_INDEX] * len(text_part) + rest + [EOS]
            items += [("text", t) for t in text_part] + [("task", None)] + [("speech", s) for s in rest]
    return items, targets


def test_bistream_forward_matches_upstreams_interleaved_layout():
    policy = tiny_policy(text_chunk=2, speech_chunk=3)
    text = [3, 4, 5, 6, 7]  # 2 full text chunks + 1 remaining token
    speech = list(range(1, 17))  # 16 > 3/2 * 5: eligible; 6 in full chunks, 10 after task_id
    items, targets = upstream_bistream_layout(text, speech, 2, 3)
    with torch.no_grad():
        hidden = policy.model(inputs_embeds=embed_sequence(policy, items)).last_hidden_state
        reference = policy.llm_decoder(hidden)[0]
        predicted = [t for t in targets if t != IGNORE_INDEX]
        reference = reference[torch.tensor([i for i, t in enumerate(targets) if t != IGNORE_INDEX])]
        # Hand-checked target list: 1 2 3 fill 4 5 6 fill 7..16 eos.
        assert predicted == [1, 2, 3, FILL, 4, 5, 6, FILL] + list(range(7, 17)) + [EOS]

        collator = DataCollatorForCosyVoice2(
            build_tiny_cosyvoice2_tokenizer(["w"]),
            use_instruction=False,
            speech_token_size=SPEECH_TOKEN_SIZE,
            bistream_probability=1.0,
            bistream_text_chunk=2,
            bistream_speech_chunk=3,
        )
        labels = torch.tensor([collator._targets(speech, len(text) // 2)])
        outputs = policy(
            text_ids=torch.tensor([text]),
            speech_ids=torch.tensor([speech]),
            labels=labels,
            bistream=torch.tensor([True]),
        )
    assert labels[0].tolist() == predicted
    torch.testing.assert_close(outputs.logits[0], reference)
    assert outputs.logits_mask.all()


def test_bistream_rows_mix_with_unistream_rows_in_one_batch():
    policy = tiny_policy(text_chunk=2, speech_chunk=3)
    texts, speeches = [[3, 4, 5, 6, 7], [8, 9]], [list(range(1, 17)), [4, 5, 6]]
    with torch.no_grad():
        alone = [
            policy(
                text_ids=torch.tensor([texts[0]]),
                speech_ids=torch.tensor([speeches[0]]),
                bistream=torch.tensor([True]),
            ).logits[0],
            policy(text_ids=torch.tensor([texts[1]]), speech_ids=torch.tensor([speeches[1]])).logits[0],
        ]
        speech_ids = torch.zeros(2, 16, dtype=torch.long)
        speech_ids[0], speech_ids[1, :3] = torch.tensor(speeches[0]), torch.tensor(speeches[1])
        batch = policy(
            text_ids=torch.tensor([texts[0], texts[1] + [0, 0, 0]]),
            text_attention_mask=torch.tensor([[1] * 5, [1, 1, 0, 0, 0]]),
            speech_ids=speech_ids,
            speech_attention_mask=(torch.arange(16) < torch.tensor([[16], [3]])).long(),
            bistream=torch.tensor([True, False]),
        )
    assert batch.logits.shape[1] == 16 + 2 + 1  # speech width + max full chunks + 1
    torch.testing.assert_close(batch.logits[0], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batch.logits[1, :4], alone[1], atol=1e-5, rtol=1e-4)
    assert batch.logits_mask[1].tolist() == [True] * 4 + [False] * 15


def test_collator_trains_eligible_rows_bistream_and_the_model_learns_from_them():
    tokenizer = build_tiny_cosyvoice2_tokenizer(["a", "b", "c", "d", "e"])
    collator = DataCollatorForCosyVoice2(
        tokenizer,
        use_instruction=False,
        speech_token_size=SPEECH_TOKEN_SIZE,
        bistream_probability=1.0,
        bistream_text_chunk=2,
        bistream_speech_chunk=3,
        seed=0,
    )
    rows = [
        {"text": "a b c d e", "speech_tokens": list(range(1, 17))},  # 16/5 > 3/2: bistream
        {"text": "a b c d e", "speech_tokens": list(range(1, 8))},  # 7/5 <= 3/2: unistream
    ]
    batch = collator(rows)
    assert batch["bistream"].tolist() == [True, False]
    assert batch["labels"].shape == (2, 16 + 2 + 1)
    assert batch["labels"][0].tolist() == [1, 2, 3, FILL, 4, 5, 6, FILL] + list(range(7, 17)) + [EOS]
    assert batch["labels"][1].tolist() == list(range(1, 8)) + [EOS] + [IGNORE_INDEX] * 11
    policy = tiny_policy(text_chunk=2, speech_chunk=3)
    assert len(tokenizer) <= 40  # the tiny model's text vocabulary covers this tokenizer
    loss = policy(**batch).loss
    loss.backward()
    assert torch.isfinite(loss) and policy.llm_decoder.bias.grad[FILL] != 0

    # probability 0: plain unistream batches, without the flag
    plain = DataCollatorForCosyVoice2(tokenizer, use_instruction=False, speech_token_size=SPEECH_TOKEN_SIZE)(rows)
    assert "bistream" not in plain and plain["labels"].shape == (2, 17)
    # about half the eligible rows at upstream's 0.5
    half = DataCollatorForCosyVoice2(
        tokenizer,
        use_instruction=False,
        speech_token_size=SPEECH_TOKEN_SIZE,
        bistream_probability=0.5,
        seed=1,
        bistream_text_chunk=2,
        bistream_speech_chunk=3,
    )([rows[0]] * 400)
    assert 0.4 < half["bistream"].float().mean() < 0.6


def test_model_rejects_labels_without_the_bistream_fill_ids():
    policy = tiny_policy(text_chunk=2, speech_chunk=3)
    speech = list(range(1, 17))
    unistream_labels = torch.tensor([speech + [EOS] + [IGNORE_INDEX] * 2])
    with pytest.raises(ValueError, match="fill id"):
        policy(
            text_ids=torch.tensor([[3, 4, 5, 6, 7]]),
            speech_ids=torch.tensor([speech]),
            labels=unistream_labels,
            bistream=torch.tensor([True]),
        )


# -- zero-shot prompts ------------------------------------------------------------------------------------------
def test_zero_shot_forward_reads_prompt_speech_after_task_id():
    policy = tiny_policy()
    text, prompt_speech, speech = [3, 4, 5, 6], [7, 8, 9], [1, 2]
    items = [("sos", None)] + [("text", t) for t in text] + [("task", None)]
    items += [("speech", s) for s in prompt_speech + speech]
    with torch.no_grad():
        hidden = policy.model(inputs_embeds=embed_sequence(policy, items)).last_hidden_state
        # the last prompt token predicts speech 0, ..., the last speech token predicts eos
        reference = policy.llm_decoder(hidden)[0, 1 + len(text) + len(prompt_speech) :]
        outputs = policy(
            text_ids=torch.tensor([text]),
            speech_ids=torch.tensor([speech]),
            prompt_speech_ids=torch.tensor([prompt_speech]),
        )
    torch.testing.assert_close(outputs.logits[0], reference)


def test_zero_shot_generation_continues_the_prompt_speech_batched_and_cached():
    policy = tiny_policy()
    texts = [[3, 4, 5, 6], [7, 8]]
    prompts = [[9, 10, 11], []]  # one voice-cloning row, one plain row in the same batch
    kwargs = dict(min_new_tokens=5, max_new_tokens=5, do_sample=False)
    batched = generate_speech_tokens(policy, texts, prompt_speech_ids=prompts, **kwargs)
    uncached = generate_speech_tokens(policy, texts, prompt_speech_ids=prompts, use_cache=False, **kwargs)
    alone = [
        generate_speech_tokens(policy, [texts[0]], prompt_speech_ids=[prompts[0]], **kwargs)[0],
        generate_speech_tokens(policy, [texts[1]], **kwargs)[0],
    ]
    assert batched == uncached == alone
    # Greedy generation = arg-max of the teacher-forced logits with the same prompt speech.
    with torch.no_grad():
        logits = policy(
            text_ids=torch.tensor([texts[0]]),
            speech_ids=torch.tensor([batched[0]]),
            prompt_speech_ids=torch.tensor([prompts[0]]),
        ).logits[0, :5, :SPEECH_TOKEN_SIZE]
    assert logits.argmax(dim=-1).tolist() == batched[0]


def test_collators_put_the_prompt_transcript_first_and_count_only_the_text():
    tokenizer = build_tiny_cosyvoice2_tokenizer(["Your", "emotion", "is", "happy", "ka", "mi", "pro", "mpt"])
    row = {
        "text": "ka mi",
        "speech_tokens": [1, 2],
        "emotion": "happy",
        "prompt_text": "pro mpt",
        "prompt_speech_tokens": [5, 6, 7],
    }
    plain_row = {"text": "mi", "speech_tokens": [3], "emotion": "happy", "prompt_text": "", "prompt_speech_tokens": []}
    collator = DataCollatorForCosyVoice2(tokenizer, speech_token_size=SPEECH_TOKEN_SIZE)
    batch = collator([row, plain_row])
    ids = tokenizer.convert_tokens_to_ids
    expected = ids(["pro", "mpt", "Your", "emotion", "is", "happy", "<|endofprompt|>", "ka", "mi"])
    assert batch["text_ids"][0].tolist() == expected
    assert batch["prompt_speech_ids"].tolist() == [[5, 6, 7], [0, 0, 0]]
    assert batch["prompt_speech_attention_mask"].tolist() == [[1, 1, 1], [0, 0, 0]]
    assert batch["text_ratio_lengths"].tolist() == [2, 1]  # neither the transcript nor the instruction count
    assert batch["labels"][0].tolist() == [1, 2, EOS]  # the prompt speech is never a target

    plain = DataCollatorForCosyVoice2(tokenizer, use_instruction=False, speech_token_size=SPEECH_TOKEN_SIZE)
    assert plain([row])["text_ratio_lengths"].tolist() == [2]
    assert "prompt_speech_ids" not in plain([plain_row])  # no prompt in the batch: the batch keeps its old keys
    with pytest.raises(ValueError, match="prompt_text"):
        plain([{**row, "prompt_text": ""}])

    diffro = DataCollatorForDiffRO(tokenizer, {"happy": 0}, with_speech=False, speech_token_size=SPEECH_TOKEN_SIZE)(
        [row]
    )
    assert diffro["prompt_speech_ids"].tolist() == [[5, 6, 7]] and diffro["text_ratio_lengths"].tolist() == [2]


# -- llm.pt dtype, transformers cache argument -------------------------------------------------------------------
def test_save_cosyvoice_writes_float32_unless_asked(tmp_path):
    policy = tiny_policy().to(torch.bfloat16)
    default = torch.load(policy.save_cosyvoice(tmp_path / "default.pt"), weights_only=True)
    assert {t.dtype for t in default.values()} == {torch.float32}
    half = torch.load(policy.save_cosyvoice(tmp_path / "half.pt", dtype=torch.bfloat16), weights_only=True)
    assert {t.dtype for t in half.values()} == {torch.bfloat16}


def test_generation_passes_the_kv_cache_under_the_backbones_current_argument(monkeypatch):
    policy = tiny_policy()
    seen = []
    forward = policy.model.forward

    def recording_forward(*args, **kwargs):
        seen.append(set(kwargs))
        return forward(*args, **kwargs)

    monkeypatch.setattr(policy.model, "forward", recording_forward)
    generate_speech_tokens(policy, [[3, 4, 5]], min_new_tokens=3, max_new_tokens=3, seed=0)
    # transformers renamed `past_key_values` to `cache`; the floor (make test-min) still has the old name
    accepted = inspect.signature(type(policy.model).forward).parameters
    current, old = ("cache", "past_key_values") if "cache" in accepted else ("past_key_values", "cache")
    assert generation._CACHE_KEYWORD == current
    assert all(old not in keys for keys in seen)
    assert sum(current in keys for keys in seen) == 2  # every decoding step after the prompt reuses the cache


def test_zero_shot_prompt_builder_feeds_generation():
    from rrpo_hf.models.cosyvoice2 import build_instruct_text, build_zero_shot_inputs

    tokenizer = build_tiny_cosyvoice2_tokenizer(["Your", "emotion", "is", "sad", "ka", "mi", "pro"])
    inputs = build_zero_shot_inputs(
        tokenizer, build_instruct_text("ka mi", emotion="sad"), "pro", [4, 5], speech_token_size=SPEECH_TOKEN_SIZE
    )
    ids = tokenizer.convert_tokens_to_ids
    assert inputs["text_ids"] == ids(["pro", "Your", "emotion", "is", "sad", "<|endofprompt|>", "ka", "mi"])
    assert inputs["prompt_speech_ids"] == [4, 5] and inputs["text_length_for_ratio"] == 2
    tokens = generate_speech_tokens(
        tiny_policy(),
        [inputs["text_ids"]],
        prompt_speech_ids=[inputs["prompt_speech_ids"]],
        text_lengths_for_ratio=[inputs["text_length_for_ratio"]],
        min_len_ratio=2.0,
        max_len_ratio=3.0,
        seed=0,
    )[0]
    assert 4 <= len(tokens) <= 6  # bounds from the 2 spoken tokens, not the 8 text ids
    with pytest.raises(ValueError, match="transcript"):
        build_zero_shot_inputs(tokenizer, "ka", "", [4])


def test_sft_script_trains_bistream_rows_and_exports_a_loadable_llm_pt(tmp_path):
    from test_sft import load_sft_script

    sft = load_sft_script()
    args = [
        "--output_dir",
        str(tmp_path / "policy"),
        "--testbed_num_train",
        "32",
        "--testbed_num_test",
        "8",
        "--tiny_hidden_size",
        "32",
        "--tiny_num_hidden_layers",
        "1",
        "--tiny_intermediate_size",
        "64",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "16",
        "--num_generation_samples",
        "0",
        "--bistream_probability",
        "1.0",
        "--export_cosyvoice",
        "true",
        "--report_to",
        "none",
    ]
    script_args, training_args, model_args = sft.make_parser().parse_args_and_config(args)
    result = sft.main(script_args, training_args, model_args)
    trainer = result["trainer"]
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["bistream"].any()  # testbed utterances have more than 3 speech tokens per text token
    assert (batch["labels"] == trainer.model.config.speech_fill_id).any()
    exported = torch.load(tmp_path / "policy" / "llm.pt", weights_only=True)
    assert exported["llm_decoder.weight"].shape[0] == trainer.model.config.speech_fill_id + 1
    assert {tensor.dtype for tensor in exported.values()} == {torch.float32}
