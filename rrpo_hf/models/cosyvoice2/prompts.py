"""Instruct-emotion prompts for CosyVoice2: ``instruction + "<|endofprompt|>" + text``.

``"en"`` is DiffRO's emotion template ("Your emotion is angry<|endofprompt|>..."); ``"zh"`` follows CosyVoice2's
Chinese instruct examples ("用开心的语气说<|endofprompt|>..."). Any format string with ``{emotion}`` (canonical English
name) and/or ``{emotion_zh}`` (Chinese name) works as a custom template.
"""

from __future__ import annotations

from collections.abc import Mapping

from rrpo_hf.data.labels import CANONICAL_EMOTIONS, UnknownEmotionError, normalize_emotion

from .tokenization import COSYVOICE2_END_OF_PROMPT

EMOTION_INSTRUCTION_TEMPLATES: dict[str, str] = {
    "en": "Your emotion is {emotion}",
    "zh": "用{emotion_zh}的语气说",
}

#: Canonical emotion -> the Chinese word used in CosyVoice2-style instructions.
EMOTION_NAMES_ZH: dict[str, str] = {
    "neutral": "平静",
    "happy": "开心",
    "angry": "生气",
    "sad": "伤心",
    "surprised": "惊讶",
    "fearful": "恐惧",
}


def _resolve_template(template: str) -> str:
    template = EMOTION_INSTRUCTION_TEMPLATES.get(template, template)
    if "{emotion}" not in template and "{emotion_zh}" not in template:
        raise ValueError(
            f"Unknown instruction template {template!r}: use one of {sorted(EMOTION_INSTRUCTION_TEMPLATES)} or a "
            "format string containing '{emotion}' or '{emotion_zh}'."
        )
    return template


def build_emotion_instruction(
    emotion: str,
    template: str = "en",
    extra_aliases: Mapping[str, str] | None = None,
) -> str:
    """The instruction for one emotion (any corpus spelling, normalised to the canonical name first)."""
    canonical = normalize_emotion(emotion, extra_aliases)
    template = _resolve_template(template)
    if "{emotion_zh}" in template and canonical not in EMOTION_NAMES_ZH:
        raise UnknownEmotionError(
            f"No Chinese name for emotion {canonical!r}; known: {sorted(EMOTION_NAMES_ZH)}. Use an English template "
            "or pass `instruction=` directly."
        )
    return template.format(emotion=canonical, emotion_zh=EMOTION_NAMES_ZH.get(canonical, canonical))


def build_instruct_text(
    text: str,
    emotion: str | None = None,
    instruction: str | None = None,
    template: str = "en",
    extra_aliases: Mapping[str, str] | None = None,
) -> str:
    """
    CosyVoice2 instruct-mode input: ``instruction + "<|endofprompt|>" + text``.

    Exactly one of ``emotion`` (rendered with ``template``) and ``instruction`` (used verbatim) is required.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"The text to speak must be a non-empty string, got {text!r}.")
    if (emotion is None) == (instruction is None):
        raise ValueError("Pass exactly one of `emotion` (rendered with `template`) and `instruction`.")
    if instruction is None:
        instruction = build_emotion_instruction(emotion, template, extra_aliases)
    for part, name in ((instruction, "instruction"), (text, "text")):
        if COSYVOICE2_END_OF_PROMPT in part:
            raise ValueError(f"The {name} already contains {COSYVOICE2_END_OF_PROMPT!r}: {part!r}.")
    return f"{instruction}{COSYVOICE2_END_OF_PROMPT}{text}"


def instruction_words(template: str = "en", emotions=CANONICAL_EMOTIONS) -> list[str]:
    """Whitespace-separated words of the instructions for ``emotions``, in first-seen order: the vocabulary a
    word-level tokenizer (:func:`build_tiny_cosyvoice2_tokenizer`) needs to encode every instruction."""
    words: dict[str, None] = {}
    for emotion in emotions:
        words.update(dict.fromkeys(build_emotion_instruction(emotion, template).split()))
    return list(words)


__all__ = [
    "EMOTION_INSTRUCTION_TEMPLATES",
    "EMOTION_NAMES_ZH",
    "build_emotion_instruction",
    "build_instruct_text",
    "instruction_words",
]
