"""CosyVoice2 text tokenizer (real-format loader and tiny word-level stand-in) and instruct prompts."""

import json

import pytest
from tokenizers.pre_tokenizers import ByteLevel
from transformers import AutoTokenizer

from rrpo_hf.data.labels import UnknownEmotionError
from rrpo_hf.models.cosyvoice2 import (
    COSYVOICE2_SPECIAL_TOKENS,
    EMOTION_INSTRUCTION_TEMPLATES,
    build_instruct_text,
    build_tiny_cosyvoice2_tokenizer,
    instruction_words,
    load_cosyvoice2_tokenizer,
)
from rrpo_hf.models.cosyvoice2.tokenization import (
    COSYVOICE2_END_OF_PROMPT_ID,
    COSYVOICE2_EOS_TOKEN_ID,
    COSYVOICE2_TOKENIZER_LENGTH,
)


MERGES = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ġ", "w"), ("o", "r"), ("Ġw", "or")]


def write_blank_en(path, with_release_tokenizer_config=True):
    """A tiny CosyVoice-BlankEN: byte-level BPE vocab.json + merges.txt (no tokenizer.json, like the release)."""
    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    for left, right in MERGES:
        vocab[left + right] = len(vocab)
    path.mkdir()
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
    if with_release_tokenizer_config:
        # the release's tokenizer_config.json already declares <|endoftext|>, <|im_start|>, <|im_end|>
        added = {
            str(len(vocab) + i): {"content": tok, "special": True}
            for i, tok in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        }
        (path / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "added_tokens_decoder": added,
                    "eos_token": "<|endoftext|>",
                    "pad_token": "<|endoftext|>",
                    "bos_token": None,
                    "tokenizer_class": "Qwen2Tokenizer",
                }
            )
        )
    return len(vocab)


def test_released_ids_follow_the_documented_order():
    # 151643 BPE entries, then <|endoftext|> and the 19 special tokens
    assert COSYVOICE2_END_OF_PROMPT_ID == COSYVOICE2_EOS_TOKEN_ID + 1 + COSYVOICE2_SPECIAL_TOKENS.index(
        "<|endofprompt|>"
    )
    assert COSYVOICE2_TOKENIZER_LENGTH == COSYVOICE2_EOS_TOKEN_ID + 1 + len(COSYVOICE2_SPECIAL_TOKENS)
    assert COSYVOICE2_SPECIAL_TOKENS[:4] == ("<|im_start|>", "<|im_end|>", "<|endofprompt|>", "[breath]")
    assert COSYVOICE2_SPECIAL_TOKENS[-1] == "[mn]" and len(set(COSYVOICE2_SPECIAL_TOKENS)) == 19


@pytest.mark.parametrize("with_config", [True, False])
def test_load_from_blank_en_dir(tmp_path, with_config):
    bpe_size = write_blank_en(tmp_path / "CosyVoice-BlankEN", with_config)
    tokenizer = load_cosyvoice2_tokenizer(tmp_path / "CosyVoice-BlankEN")
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert eos == bpe_size == tokenizer.eos_token_id == tokenizer.pad_token_id
    assert tokenizer.convert_tokens_to_ids(list(COSYVOICE2_SPECIAL_TOKENS)) == list(range(eos + 1, eos + 20))
    assert len(tokenizer) == bpe_size + 20
    text = build_instruct_text("hello world", emotion="happy")
    ids = tokenizer(text)["input_ids"]
    assert ids.count(eos + 3) == 1
    assert tokenizer.convert_ids_to_tokens(ids[ids.index(eos + 3) :]) == ["<|endofprompt|>", "hello", "Ġwor", "l", "d"]
    assert tokenizer.bos_token_id is None or ids[0] != tokenizer.bos_token_id
    assert tokenizer.decode(ids) == text


def test_load_rejects_incomplete_or_reordered_vocab(tmp_path):
    write_blank_en(tmp_path / "bad")
    (tmp_path / "bad" / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        load_cosyvoice2_tokenizer(tmp_path / "bad")
    size = write_blank_en(tmp_path / "extra", with_release_tokenizer_config=False)
    config = {
        "added_tokens_decoder": {
            str(size): {"content": "<|endoftext|>", "special": True},
            str(size + 1): {"content": "[mn]", "special": True},
        }
    }
    (tmp_path / "extra" / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="must follow <\\|endoftext\\|>"):
        load_cosyvoice2_tokenizer(tmp_path / "extra")


def test_tiny_tokenizer_splits_instruct_text_and_round_trips(tmp_path):
    tokenizer = build_tiny_cosyvoice2_tokenizer(instruction_words("en") + ["ka", "mi", "to", "ka"])
    encoded = tokenizer("Your emotion is angry<|endofprompt|>ka mi to")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(encoded) == [
        "Your",
        "emotion",
        "is",
        "angry",
        "<|endofprompt|>",
        "ka",
        "mi",
        "to",
    ]
    eos = tokenizer.eos_token_id
    assert eos == len(instruction_words("en")) + 3 == tokenizer.pad_token_id
    assert tokenizer.convert_tokens_to_ids("<|endofprompt|>") == eos + 3
    assert tokenizer.unk_token_id == len(tokenizer) - 1
    assert tokenizer("ka zz")["input_ids"] == [tokenizer.convert_tokens_to_ids("ka"), tokenizer.unk_token_id]
    padded = tokenizer(["ka mi to", "ka"], padding=True)
    assert padded["input_ids"][1] == [encoded[5], eos, eos] and padded["attention_mask"][1] == [1, 0, 0]
    assert tokenizer.decode(encoded[5:]) == "ka mi to"
    tokenizer.save_pretrained(tmp_path)
    assert (
        AutoTokenizer.from_pretrained(tmp_path)("Your emotion is angry<|endofprompt|>ka mi to")["input_ids"] == encoded
    )


def test_tiny_tokenizer_rejects_bad_words():
    with pytest.raises(ValueError, match="whitespace"):
        build_tiny_cosyvoice2_tokenizer(["two words"])
    with pytest.raises(ValueError, match="special token"):
        build_tiny_cosyvoice2_tokenizer(["ka", "<|endofprompt|>"])
    with pytest.raises(ValueError, match="at least one word"):
        build_tiny_cosyvoice2_tokenizer([])


def test_instruct_prompts_english_chinese_and_custom():
    assert build_instruct_text("ka mi", emotion="angry") == "Your emotion is angry<|endofprompt|>ka mi"
    assert build_instruct_text("ka", emotion="Surprise") == "Your emotion is surprised<|endofprompt|>ka"
    assert build_instruct_text("你好", emotion="happy", template="zh") == "用开心的语气说<|endofprompt|>你好"
    assert build_instruct_text("你好", emotion="ang", template="zh") == "用生气的语气说<|endofprompt|>你好"
    assert (
        build_instruct_text("hi", emotion="sad", template="Speak in a {emotion} voice.")
        == "Speak in a sad voice.<|endofprompt|>hi"
    )
    assert build_instruct_text("hi", instruction="Whisper softly") == "Whisper softly<|endofprompt|>hi"
    assert instruction_words("en") == [
        "Your",
        "emotion",
        "is",
        "neutral",
        "happy",
        "angry",
        "sad",
        "surprised",
        "fearful",
    ]
    assert len(instruction_words("zh")) == 6 and "用恐惧的语气说" in instruction_words("zh")
    assert set(EMOTION_INSTRUCTION_TEMPLATES) == {"en", "zh"}


def test_instruct_prompt_errors():
    with pytest.raises(UnknownEmotionError, match="bored"):
        build_instruct_text("ka", emotion="bored")
    with pytest.raises(UnknownEmotionError, match="Chinese"):
        build_instruct_text("ka", emotion="disgusted", template="zh")
    with pytest.raises(ValueError, match="exactly one"):
        build_instruct_text("ka")
    with pytest.raises(ValueError, match="exactly one"):
        build_instruct_text("ka", emotion="sad", instruction="Be sad")
    with pytest.raises(ValueError, match="template"):
        build_instruct_text("ka", emotion="sad", template="fr")
    with pytest.raises(ValueError, match="non-empty"):
        build_instruct_text("  ", emotion="sad")
    with pytest.raises(ValueError, match="already contains"):
        build_instruct_text("ka", instruction="x<|endofprompt|>")
