"""CosyVoice2's text tokenizer: the Qwen2 BPE of ``CosyVoice-BlankEN`` plus CosyVoice's special tokens.

CosyVoice adds its special tokens after ``<|endoftext|>`` in a fixed order; the LM's text embedding rows are indexed
by the resulting ids (``<|endofprompt|>`` = 151646 in the release), so the order is part of the checkpoint format.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer

from ...data.prompts import COSYVOICE2_END_OF_PROMPT


#: End of text; also the padding token (id 151643 in the release, right after the BPE vocabulary).
COSYVOICE2_EOS_TOKEN = "<|endoftext|>"
#: CosyVoice2's additional special tokens, in the order CosyVoice registers them (ids follow ``<|endoftext|>``).
COSYVOICE2_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|im_start|>",
    "<|im_end|>",
    COSYVOICE2_END_OF_PROMPT,
    "[breath]",
    "<strong>",
    "</strong>",
    "[noise]",
    "[laughter]",
    "[cough]",
    "[clucking]",
    "[accent]",
    "[quick_breath]",
    "<laughter>",
    "</laughter>",
    "[hissing]",
    "[sigh]",
    "[vocalized-noise]",
    "[lipsmack]",
    "[mn]",
)
#: Ids of the released tokenizer, checked when loading it.
COSYVOICE2_EOS_TOKEN_ID = 151643
COSYVOICE2_END_OF_PROMPT_ID = 151646
COSYVOICE2_TOKENIZER_LENGTH = 151663


def _check_special_token_order(tokenizer, special_tokens=COSYVOICE2_SPECIAL_TOKENS, family="CosyVoice2") -> None:
    """The special tokens must have consecutive ids right after <|endoftext|>, as in CosyVoice2 / CosyVoice3."""
    eos_id = tokenizer.convert_tokens_to_ids(COSYVOICE2_EOS_TOKEN)
    ids = tokenizer.convert_tokens_to_ids(list(special_tokens))
    expected = list(range(eos_id + 1, eos_id + 1 + len(special_tokens)))
    if ids != expected:
        wrong = {tok: i for tok, i, e in zip(special_tokens, ids, expected) if i != e}
        raise ValueError(
            f"{family} special tokens must follow {COSYVOICE2_EOS_TOKEN} (id {eos_id}) in order, but got {wrong}. "
            "The text embedding rows of the LM are indexed by these ids: use the unmodified CosyVoice-BlankEN "
            "vocabulary (vocab.json / merges.txt without extra added tokens)."
        )


def load_cosyvoice2_tokenizer(blank_en_dir: str | os.PathLike) -> Qwen2Tokenizer:
    """
    The CosyVoice2 text tokenizer from a ``CosyVoice-BlankEN`` directory (``vocab.json`` + ``merges.txt``; the release
    has no ``tokenizer.json``), with CosyVoice's special tokens added in the documented order.

    ``<|endoftext|>`` is eos and pad; no BOS is added. With the released vocabulary ``<|endofprompt|>`` is 151646 and
    the tokenizer has 151663 entries, all inside the LM's 151936-row text embedding.
    """
    return load_blank_en_tokenizer(blank_en_dir, COSYVOICE2_SPECIAL_TOKENS, "CosyVoice2")


def load_blank_en_tokenizer(blank_en_dir, special_tokens: tuple[str, ...], family: str) -> Qwen2Tokenizer:
    """The Qwen2 BPE of a ``CosyVoice-BlankEN`` folder with ``special_tokens`` added after ``<|endoftext|>``."""
    blank_en_dir = Path(blank_en_dir)
    missing = [name for name in ("vocab.json", "merges.txt") if not (blank_en_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{blank_en_dir} lacks {missing}. Pass the `CosyVoice-BlankEN` folder of a {family} model dir."
        )
    tokenizer = Qwen2Tokenizer.from_pretrained(str(blank_en_dir))
    tokenizer.add_special_tokens(
        {
            "eos_token": COSYVOICE2_EOS_TOKEN,
            "pad_token": COSYVOICE2_EOS_TOKEN,
            "additional_special_tokens": list(special_tokens),
        }
    )
    _check_special_token_order(tokenizer, special_tokens, family)
    return tokenizer


def build_tiny_cosyvoice2_tokenizer(words: Iterable[str], unk_token: str = "<unk>") -> PreTrainedTokenizerFast:
    """
    A word-level stand-in for the CosyVoice2 tokenizer (tests, the synthetic testbed): one id per given word
    (in first-seen order), then ``<|endoftext|>`` and the CosyVoice2 special tokens in the same relative order as
    the real tokenizer, then ``unk_token``. Words are split on whitespace; special tokens are matched anywhere, so
    ``"Your emotion is angry<|endofprompt|>ka mi"`` gives ``[Your, emotion, is, angry, <|endofprompt|>, ka, mi]``.
    """
    return build_word_level_tokenizer(words, COSYVOICE2_SPECIAL_TOKENS, "CosyVoice2", unk_token)


def build_word_level_tokenizer(
    words: Iterable[str], special_tokens: tuple[str, ...], family: str, unk_token: str = "<unk>"
) -> PreTrainedTokenizerFast:
    """One id per word, then ``<|endoftext|>`` and ``special_tokens`` in order, then ``unk_token``."""
    reserved = {COSYVOICE2_EOS_TOKEN, unk_token, *special_tokens}
    vocab: dict[str, int] = {}
    for word in words:
        if not isinstance(word, str) or not word or any(ch.isspace() for ch in word):
            raise ValueError(f"Words must be non-empty strings without whitespace; got {word!r}.")
        if word in reserved:
            raise ValueError(f"{word!r} is a special token of the {family} tokenizer; it is added automatically.")
        vocab.setdefault(word, len(vocab))
    if not vocab:
        raise ValueError("A word-level CosyVoice tokenizer needs at least one word.")
    for token in (COSYVOICE2_EOS_TOKEN, *special_tokens, unk_token):
        vocab[token] = len(vocab)

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk_token))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # WordLevel has no notion of spaces: decode joins words with one space, like the input format.
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=COSYVOICE2_EOS_TOKEN,
        pad_token=COSYVOICE2_EOS_TOKEN,
        unk_token=unk_token,
        additional_special_tokens=list(special_tokens),
    )
    _check_special_token_order(tokenizer, special_tokens, family)
    return tokenizer


__all__ = [
    "COSYVOICE2_END_OF_PROMPT",
    "COSYVOICE2_END_OF_PROMPT_ID",
    "COSYVOICE2_EOS_TOKEN",
    "COSYVOICE2_EOS_TOKEN_ID",
    "COSYVOICE2_SPECIAL_TOKENS",
    "COSYVOICE2_TOKENIZER_LENGTH",
    "build_tiny_cosyvoice2_tokenizer",
    "load_cosyvoice2_tokenizer",
]
