"""CosyVoice3LM against a transcription of upstream's ``CosyVoice3LM`` (FunAudioLLM/CosyVoice ``cosyvoice/llm/llm.py``
at ace7c47; no CosyVoice install): teacher-forced loss (unistream and bistream, instruct tokens before the chunks),
greedy decoding, special-token ids, instruct prompts, stop handling before and after ``min_len``, RAS.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import Qwen2ForCausalLM

from rrpo_hf import CosyVoice3LM, build_tiny_cosyvoice3_tokenizer, tiny_cosyvoice3_config
from rrpo_hf.data.prompts import build_instruct_text, build_plain_text, build_zero_shot_inputs
from rrpo_hf.data.speech_lm_collator import DataCollatorForCosyVoice2
from rrpo_hf.models.cosyvoice2.checkpoint import export_cosyvoice_state_dict
from rrpo_hf.models.cosyvoice2.generation import generate_speech_tokens


V = 24  # codebook: sos 24, eos 25, task_id 26, fill 27, 28..223 unused stop ids
SOS, EOS, TASK, FILL = V, V + 1, V + 2, V + 3
IGNORE_ID = -1  # cosyvoice.utils.common.IGNORE_ID
WORDS = ["ka", "mi", "to", "ra", "su", "ne", "Your", "emotion", "is", "happy", "sad"]


def tiny_tokenizer():
    return build_tiny_cosyvoice3_tokenizer(WORDS)


def tiny_policy(seed=0, text_chunk=5, speech_chunk=15) -> CosyVoice3LM:
    tokenizer = tiny_tokenizer()
    config = tiny_cosyvoice3_config(tokenizer, V, hidden_size=32, num_attention_heads=4, num_key_value_heads=2)
    config.bistream_text_chunk, config.bistream_speech_chunk = text_chunk, speech_chunk
    torch.manual_seed(seed)
    model = CosyVoice3LM(config).eval()
    with torch.no_grad():  # non-trivial norms so a swapped or dropped tensor changes the outputs
        for param in model.parameters():
            if param.dim() == 1:
                param.normal_(1.0, 0.2)
    return model


class UpstreamCosyVoice3LM(nn.Module):
    """A line-by-line transcription of upstream's CosyVoice3LM: ``__init__``, ``prepare_lm_input_target``,
    ``forward``, ``sampling_ids`` and the non-vLLM branch of ``inference`` / ``inference_wrapper``.

    Departures, each marked: the bistream coin (``random.random() < 0.5``) is an argument; ``sampling`` is an
    argument (greedy here); ``Qwen2Encoder.forward_one_step``'s mask (``masks[:, -1, :]``, all ones) is passed as no
    mask, which is the same causal attention.
    """

    def __init__(self, llm_config, speech_token_size, end_of_prompt_id, mix_ratio=(5, 15)):
        super().__init__()
        self.speech_token_size = speech_token_size
        self.sos = speech_token_size + 0
        self.eos_token = speech_token_size + 1
        self.task_id = speech_token_size + 2
        self.fill_token = speech_token_size + 3
        self.llm = nn.Module()
        self.llm.model = Qwen2ForCausalLM(llm_config)
        self.llm_decoder = nn.Linear(llm_config.hidden_size, speech_token_size + 200, bias=False)
        self.speech_embedding = nn.Embedding(speech_token_size + 200, llm_config.hidden_size)
        self.mix_ratio = list(mix_ratio)
        self.stop_token_ids = [speech_token_size + i for i in range(200)]
        self.end_of_prompt_id = end_of_prompt_id  # upstream hard-codes 151646

    # Qwen2Encoder.forward
    def encoder(self, xs, xs_lens):
        masks = torch.arange(xs.size(1))[None, :] < xs_lens[:, None]
        outs = self.llm.model(inputs_embeds=xs, attention_mask=masks, output_hidden_states=True, return_dict=True)
        return outs.hidden_states[-1]

    def prepare_lm_input_target(self, sos_emb, text_token, text_emb, task_id_emb, speech_token, speech_emb,
                                instruct_token, instruct_emb, bistream):  # fmt: skip
        lm_target, lm_input = [], []
        for i in range(len(text_token)):
            text_len, speech_len = len(text_token[i]), len(speech_token[i])
            if bistream[i] and speech_len / text_len > self.mix_ratio[1] / self.mix_ratio[0]:
                this_lm_target, this_lm_input = [IGNORE_ID], [sos_emb.squeeze(dim=0)]
                this_lm_target += [IGNORE_ID] * len(instruct_token[i])
                this_lm_input.append(instruct_emb[i])
                for j in range(int(torch.tensor((text_len + 1) / self.mix_ratio[0]).ceil().item())):
                    this_text_token = text_token[i][j * self.mix_ratio[0] : (j + 1) * self.mix_ratio[0]].tolist()
                    this_speech_token = speech_token[i][j * self.mix_ratio[1] : (j + 1) * self.mix_ratio[1]].tolist()
                    if len(this_text_token) == self.mix_ratio[0]:
                        assert len(this_speech_token) == self.mix_ratio[1]
                        this_lm_target += [IGNORE_ID] * (self.mix_ratio[0] - 1)
                        this_lm_target += this_speech_token
                        this_lm_target.append(self.fill_token)
                        this_lm_input.append(text_emb[i][j * self.mix_ratio[0] : (j + 1) * self.mix_ratio[0]])
                        this_lm_input.append(speech_emb[i][j * self.mix_ratio[1] : (j + 1) * self.mix_ratio[1]])
                    else:
                        this_lm_target += [-1] * len(this_text_token)
                        this_lm_target += speech_token[i][j * self.mix_ratio[1] :].tolist()
                        this_lm_target.append(self.eos_token)
                        this_lm_input.append(text_emb[i][j * self.mix_ratio[0] :])
                        this_lm_input.append(task_id_emb.squeeze(dim=0))
                        this_lm_input.append(speech_emb[i][j * self.mix_ratio[1] :])
                this_lm_target, this_lm_input = torch.tensor(this_lm_target), torch.concat(this_lm_input, dim=0)
            else:
                this_lm_target = torch.tensor(
                    [IGNORE_ID] * (1 + len(instruct_token[i]) + text_len) + speech_token[i].tolist() + [self.eos_token]
                )
                this_lm_input = torch.concat(
                    [sos_emb.squeeze(dim=0), instruct_emb[i], text_emb[i], task_id_emb.squeeze(dim=0), speech_emb[i]]
                )
            lm_target.append(this_lm_target)
            lm_input.append(this_lm_input)
        lm_input_len = torch.tensor([i.size(0) for i in lm_input], dtype=torch.int32)
        lm_input = pad_sequence(lm_input, batch_first=True, padding_value=IGNORE_ID)
        lm_target = pad_sequence(lm_target, batch_first=True, padding_value=IGNORE_ID)
        return lm_target, lm_input, lm_input_len

    def forward(self, instruct_tokens, text_tokens, speech_tokens, bistream):
        embed = self.llm.model.model.embed_tokens
        sos_emb = self.speech_embedding.weight[self.sos].reshape(1, 1, -1)
        task_id_emb = self.speech_embedding.weight[self.task_id].reshape(1, 1, -1)
        lm_target, lm_input, lm_input_len = self.prepare_lm_input_target(
            sos_emb, text_tokens, [embed(t) for t in text_tokens], task_id_emb,
            speech_tokens, [self.speech_embedding(s) for s in speech_tokens],
            instruct_tokens, [embed(t) for t in instruct_tokens], bistream,
        )  # fmt: skip
        logits = self.llm_decoder(self.encoder(lm_input, lm_input_len))
        # LabelSmoothingLoss(smoothing=0, normalize_length=True): summed cross-entropy / number of targets
        mask = lm_target != IGNORE_ID
        summed = F.cross_entropy(logits[mask], lm_target[mask], reduction="sum")
        return summed / mask.sum()

    def sampling_ids(self, weighted_scores, decoded_tokens, sampling, ignore_eos=True, mask_every_stop_id=False):
        if ignore_eos is True:
            if mask_every_stop_id:  # the fix of CosyVoice PR #1916, which rrpo-hf follows
                weighted_scores[self.stop_token_ids] = -float("inf")
            else:  # upstream at ace7c47: in CosyVoice3 this id is sos, not eos
                weighted_scores[self.speech_token_size] = -float("inf")
        return sampling(weighted_scores, decoded_tokens)

    @torch.no_grad()
    def inference(self, text, prompt_text, prompt_speech_token, sampling, min_token_text_ratio=2,
                  max_token_text_ratio=20, mask_every_stop_id=False):  # fmt: skip
        text = torch.concat([prompt_text, text], dim=1)
        text_len, prompt_text_len = text.shape[1], prompt_text.shape[1]
        text_emb = self.llm.model.model.embed_tokens(text)
        assert self.end_of_prompt_id in text, "<|endofprompt|> not detected in CosyVoice3 text or prompt_text"
        sos_emb = self.speech_embedding.weight[self.sos].reshape(1, 1, -1)
        task_id_emb = self.speech_embedding.weight[self.task_id].reshape(1, 1, -1)
        if prompt_speech_token.shape[1] != 0:
            prompt_speech_token_emb = self.speech_embedding(prompt_speech_token)
        else:
            prompt_speech_token_emb = torch.zeros(1, 0, text_emb.shape[-1], dtype=text_emb.dtype)
        lm_input = torch.concat([sos_emb, text_emb, task_id_emb, prompt_speech_token_emb], dim=1)
        min_len = int((text_len - prompt_text_len) * min_token_text_ratio)
        max_len = int((text_len - prompt_text_len) * max_token_text_ratio)
        out_tokens, cache = [], None
        for i in range(max_len):
            outs = self.llm.model(
                inputs_embeds=lm_input, output_hidden_states=True, use_cache=True, past_key_values=cache
            )
            y_pred, cache = outs.hidden_states[-1], outs.past_key_values
            logp = self.llm_decoder(y_pred[:, -1]).log_softmax(dim=-1)
            top_ids = self.sampling_ids(
                logp.squeeze(dim=0),
                out_tokens,
                sampling,
                ignore_eos=i < min_len,
                mask_every_stop_id=mask_every_stop_id,
            )
            if top_ids in self.stop_token_ids:
                break
            out_tokens.append(top_ids)
            lm_input = self.speech_embedding.weight[top_ids].reshape(1, 1, -1)
        return out_tokens


def greedy(weighted_scores, decoded_tokens):
    return int(weighted_scores.argmax())


def upstream_copy(model: CosyVoice3LM) -> UpstreamCosyVoice3LM:
    """The transcription holding the model's weights, loaded from its llm.pt state dict with strict=True."""
    chunks = (model.config.bistream_text_chunk, model.config.bistream_speech_chunk)
    reference = UpstreamCosyVoice3LM(model.config.llm_config, V, model.config.end_of_prompt_id, chunks)
    reference.load_state_dict(export_cosyvoice_state_dict(model), strict=True)
    return reference.eval()


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# -- special tokens and prompts -----------------------------------------------------------------------------------
def test_special_speech_ids_follow_upstream():
    config = tiny_policy().config
    assert (config.sos_id, config.speech_eos_id, config.task_id, config.speech_fill_id) == (SOS, EOS, TASK, FILL)
    assert config.stop_token_ids == list(range(V, V + 200)) and config.speech_vocab_size == V + 200
    from rrpo_hf import CosyVoice3LMConfig

    released = CosyVoice3LMConfig()
    assert (released.sos_id, released.speech_eos_id, released.task_id, released.speech_fill_id) == (
        6561,
        6562,
        6563,
        6564,
    )
    assert released.stop_token_ids == [6561 + i for i in range(200)] and released.end_of_prompt_id == 151646
    with pytest.raises(ValueError, match="other than eos"):
        CosyVoice3LMConfig(sos_id=6562)


def test_tokenizer_registers_cosyvoice3_special_tokens_in_upstream_order():
    from rrpo_hf.models.cosyvoice3.tokenization import COSYVOICE3_SPECIAL_TOKENS

    tokenizer = tiny_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in COSYVOICE3_SPECIAL_TOKENS}
    assert len(COSYVOICE3_SPECIAL_TOKENS) == 280
    # Offsets from <|endoftext|> (151643) of the released ids: <|endofprompt|> 151646, <|endofsystem|> 151663, the
    # phones 151664 ([AA]) to 151923 ([ǜ]): 151924 entries.
    from rrpo_hf.models.cosyvoice3.tokenization import COSYVOICE3_END_OF_SYSTEM_ID, COSYVOICE3_TOKENIZER_LENGTH

    assert ids["<|endofprompt|>"] - eos == 151646 - 151643
    assert ids["<|endofsystem|>"] - eos == COSYVOICE3_END_OF_SYSTEM_ID - 151643 == 151663 - 151643
    assert ids["[ǜ]"] - eos == 151923 - 151643 and ids["[AA]"] - eos == 151664 - 151643
    assert COSYVOICE3_TOKENIZER_LENGTH == 151643 + 1 + 280
    assert ids["[breath]"] - eos == 4 and ids["<strong>"] - eos == 5
    assert encode(tokenizer, "[breath] ka <strong> mi </strong>") == [
        ids["[breath]"],
        tokenizer.convert_tokens_to_ids("ka"),
        ids["<strong>"],
        tokenizer.convert_tokens_to_ids("mi"),
        ids["</strong>"],
    ]


def test_instruct_prompts_carry_the_system_prompt_and_end_of_prompt():
    tokenizer = tiny_tokenizer()
    end_id = tokenizer.convert_tokens_to_ids("<|endofprompt|>")
    assert tiny_policy().config.end_of_prompt_id == end_id
    instruct = build_instruct_text("ka mi", emotion="happy", cosyvoice_version=3)
    assert instruct == "You are a helpful assistant. Your emotion is happy<|endofprompt|>ka mi"
    assert build_plain_text("ka mi", cosyvoice_version=3) == "You are a helpful assistant.<|endofprompt|>ka mi"
    assert build_instruct_text("ka", emotion="happy") == "Your emotion is happy<|endofprompt|>ka"  # CosyVoice2
    ids = encode(tokenizer, instruct)
    assert ids.count(end_id) == 1 and ids[-3] == end_id and tokenizer.unk_token_id not in ids

    collator = DataCollatorForCosyVoice2(tokenizer, speech_token_size=V, cosyvoice_version=3)
    batch = collator([{"text": "ka mi", "emotion": "happy", "speech_tokens": [1, 2, 3]}])
    assert batch["text_ids"][0].tolist() == ids
    assert batch["labels"][0].tolist() == [1, 2, 3, EOS]
    plain = DataCollatorForCosyVoice2(tokenizer, speech_token_size=V, cosyvoice_version=3, use_instruction=False)
    assert plain([{"text": "ka", "speech_tokens": [4]}])["text_ids"][0].tolist() == encode(
        tokenizer, "You are a helpful assistant.<|endofprompt|>ka"
    )
    # zero-shot: the prompt transcript follows <|endofprompt|>, as upstream's prompt_text does
    zero_shot = build_zero_shot_inputs(tokenizer, "ka", "mi to", [5, 6], speech_token_size=V, cosyvoice_version=3)
    assert zero_shot["text_ids"] == encode(tokenizer, "You are a helpful assistant.<|endofprompt|>mi to ka")
    assert zero_shot["text_length_for_ratio"] == 1


def test_generation_refuses_a_text_without_end_of_prompt_as_upstream_asserts():
    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match=r"Samples \[1\] lack <\|endofprompt\|>"):
        generate_speech_tokens(
            tiny_policy(), [encode(tokenizer, build_plain_text("ka", 3)), encode(tokenizer, "ka mi")], seed=0
        )


# -- teacher-forced loss ------------------------------------------------------------------------------------------
def test_teacher_forced_loss_matches_upstream_unistream_and_bistream_with_instructions():
    tokenizer = tiny_tokenizer()
    model = tiny_policy(seed=1)
    reference = upstream_copy(model)
    end_id = model.config.end_of_prompt_id
    generator = torch.Generator().manual_seed(0)
    rows = [  # (emotion, words, speech length, bistream coin); texts of 7 and 10 words reach the tail both ways
        ("happy", "ka mi to ra su ne ka", 30, True),
        ("sad", "mi to ra su ne ka mi to ra su", 40, True),
        ("happy", "ka mi", 9, False),
        ("sad", "to ra su", 12, True),  # speech/text = 4 > 3: eligible
        ("happy", "ne ka mi to ra su", 10, True),  # ratio below 3: unistream despite the coin
    ]
    features, instructs, texts, speeches = [], [], [], []
    for emotion, words, length, _ in rows:
        speech = torch.randint(0, V, (length,), generator=generator)
        features.append({"text": words, "emotion": emotion, "speech_tokens": speech.tolist()})
        ids = encode(tokenizer, build_instruct_text(words, emotion=emotion, cosyvoice_version=3))
        cut = ids.index(end_id) + 1
        instructs.append(torch.tensor(ids[:cut]))
        texts.append(torch.tensor(ids[cut:]))
        speeches.append(speech)
    coins = [row[3] for row in rows]
    expected = reference(instructs, texts, speeches, coins)

    collator = DataCollatorForCosyVoice2(tokenizer, speech_token_size=V, cosyvoice_version=3)
    batch = collator(features)
    # upstream's layout rule: the coin, then speech/text > 15/5 on the text after the instruction
    batch["bistream"] = torch.tensor([on and len(s) > 3 * len(t) for on, s, t in zip(coins, speeches, texts)])
    assert batch["bistream"].tolist() == [True, True, False, True, False]
    batch["labels"] = bistream_labels(collator, speeches, texts, batch["bistream"].tolist())
    with torch.no_grad():
        ours = model(**batch).loss
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


def bistream_labels(collator, speeches, texts, bistream):
    """The collator's targets (fill after every full chunk of 5 text tokens, then eos), right-padded with -100."""
    targets = [collator._targets(s.tolist(), len(t) // 5 if on else 0) for s, t, on in zip(speeches, texts, bistream)]
    labels = torch.full((len(targets), max(len(target) for target in targets)), -100)
    for row, target in enumerate(targets):
        labels[row, : len(target)] = torch.tensor(target)
    return labels


def test_collator_draws_bistream_on_the_text_after_the_instruction():
    tokenizer = tiny_tokenizer()
    collator = DataCollatorForCosyVoice2(
        tokenizer, speech_token_size=V, cosyvoice_version=3, bistream_probability=1.0, seed=0
    )
    words = "ka mi to ra su ne ka"  # 7 spoken tokens (the instruction adds 10 more, which do not count)
    batch = collator([{"text": words, "emotion": "happy", "speech_tokens": list(range(22))}])
    assert batch["bistream"].tolist() == [True]  # 22 > 3 * 7, although 22 < 3 * 17
    labels = batch["labels"][0].tolist()
    assert labels[15] == FILL and labels[-1] == EOS and labels.count(FILL) == 1
    model = tiny_policy()
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


# -- decoding -----------------------------------------------------------------------------------------------------
def test_greedy_decode_matches_upstream_with_every_stop_id_masked_before_min_len():
    tokenizer = tiny_tokenizer()
    model = tiny_policy(seed=2)
    reference = upstream_copy(model)
    end_id = model.config.end_of_prompt_id
    texts = [build_instruct_text("ka mi to", emotion="happy", cosyvoice_version=3), build_plain_text("ra su", 3)]
    ids = [encode(tokenizer, text) for text in texts]
    ours = generate_speech_tokens(model, ids, do_sample=False, prompt_end_token_id=end_id, max_len_ratio=6.0)
    for row, text_ids in enumerate(ids):
        cut = text_ids.index(end_id) + 1
        # upstream's frontend passes the instruction as prompt_text (not counted by the length bounds)
        expected = reference.inference(
            torch.tensor([text_ids[cut:]]), torch.tensor([text_ids[:cut]]), torch.zeros(1, 0, dtype=torch.long),
            greedy, max_token_text_ratio=6, mask_every_stop_id=True,
        )  # fmt: skip
        assert ours[row] == expected
        assert 2 * (len(text_ids) - cut) <= len(expected) <= 6 * (len(text_ids) - cut)


def test_zero_shot_greedy_decode_matches_upstream():
    tokenizer = tiny_tokenizer()
    model = tiny_policy(seed=3)
    reference = upstream_copy(model)
    inputs = build_zero_shot_inputs(tokenizer, "ka mi", "to ra su", [3, 1, 4, 1, 5], speech_token_size=V,
                                    cosyvoice_version=3)  # fmt: skip
    ours = generate_speech_tokens(
        model, [inputs["text_ids"]], prompt_speech_ids=[inputs["prompt_speech_ids"]],
        text_lengths_for_ratio=[inputs["text_length_for_ratio"]], do_sample=False, max_len_ratio=8.0,
    )[0]  # fmt: skip
    spoken = inputs["text_length_for_ratio"]
    expected = reference.inference(
        torch.tensor([inputs["text_ids"][-spoken:]]), torch.tensor([inputs["text_ids"][:-spoken]]),
        torch.tensor([inputs["prompt_speech_ids"]]), greedy, max_token_text_ratio=8, mask_every_stop_id=True,
    )  # fmt: skip
    assert ours == expected


def with_head_bias(model, reference, boosts: dict[int, float]):
    """Give the model and the transcription one shared head with a bias that boosts some ids at every step (the
    CosyVoice3 head has no bias of its own, so no weight edit would favour an id whatever the hidden state)."""
    head = nn.Linear(model.llm_decoder.in_features, model.llm_decoder.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.llm_decoder.weight)
        head.bias.zero_()
        for token, value in boosts.items():
            head.bias[token] = value
    model.llm_decoder = head
    reference.llm_decoder = head


@pytest.mark.parametrize("stop_id", [EOS, FILL, V + 150])
def test_no_stop_id_ends_an_utterance_before_min_len_unlike_upstream(stop_id):
    tokenizer = tiny_tokenizer()
    model = tiny_policy(seed=4)
    reference = upstream_copy(model)
    with_head_bias(model, reference, {stop_id: 50.0})  # this stop id is by far the most likely token
    ids = encode(tokenizer, build_plain_text("ka mi to", 3))
    end_id = model.config.end_of_prompt_id
    cut = ids.index(end_id) + 1
    for seed in range(3):
        ours = generate_speech_tokens(model, [ids], prompt_end_token_id=end_id, seed=seed)[0]
        assert len(ours) == 6 and all(t < V for t in ours)  # min_len = 2 * 3 text tokens, then the stop id
    no_prompt_speech = torch.zeros(1, 0, dtype=torch.long)
    upstream = reference.inference(torch.tensor([ids[cut:]]), torch.tensor([ids[:cut]]), no_prompt_speech, greedy)
    # Upstream masks only id speech_token_size (CosyVoice3's sos) before min_len, so it stops at once.
    assert upstream == []
    fixed = reference.inference(
        torch.tensor([ids[cut:]]), torch.tensor([ids[:cut]]), no_prompt_speech, greedy, mask_every_stop_id=True
    )
    assert len(fixed) == 6
    assert generate_speech_tokens(model, [ids], prompt_end_token_id=end_id, do_sample=False)[0] == fixed


def test_ras_breaks_repetition_loops_on_cosyvoice3():
    tokenizer = tiny_tokenizer()
    model = tiny_policy(seed=5)
    with_head_bias(model, upstream_copy(model), {5: 8.0})  # speech id 5 dominates: only RAS breaks the loop
    ids = encode(tokenizer, build_plain_text("ka mi to ra su", 3))
    new = generate_speech_tokens(model, [ids], min_new_tokens=40, max_new_tokens=40, seed=0)[0]
    old = generate_speech_tokens(model, [ids], min_new_tokens=40, max_new_tokens=40, seed=0, exclude_repeated=False)[0]
    assert len(new) == 40 and all(t < V for t in new)
    assert all(not (a == 5 and b == 5) for a, b in zip(new, new[1:]))  # 2026 rule: a repeat is always re-drawn
    assert old.count(5) > 30  # older rule: the re-draw puts its mass back on 5
