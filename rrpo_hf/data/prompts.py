"""Prompts for CosyVoice2: instruct-emotion texts ``instruction + "<|endofprompt|>" + text`` and zero-shot
(voice cloning) inputs ``[sos, prompt_text + text, task_id, prompt_speech]`` (:func:`build_zero_shot_inputs`).

CosyVoice3 (``cosyvoice_version=3``) reads a system prompt before every text, as its release's examples do:
``"You are a helpful assistant. " + instruction + "<|endofprompt|>" + text`` in instruct mode and
``"You are a helpful assistant.<|endofprompt|>" + text`` without an instruction; its LM refuses a text without
``<|endofprompt|>``. A zero-shot prompt's transcript follows the ``<|endofprompt|>`` there:
``[sos, system<|endofprompt|> + prompt_text + text, task_id, prompt_speech]``.

``"en"`` is DiffRO's emotion template ("Your emotion is angry<|endofprompt|>..."); ``"zh"`` follows CosyVoice2's
Chinese instruct examples ("用开心的语气说<|endofprompt|>..."). Any format string with ``{emotion}`` (canonical English
name) and/or ``{emotion_zh}`` (Chinese name) works as a custom template.
"""

from __future__ import annotations

from collections.abc import Mapping

from .labels import CANONICAL_EMOTIONS, UnknownEmotionError, normalize_emotion


#: Separates the instruction from the text to speak in instruct mode (a special token of the CosyVoice2 tokenizer).
COSYVOICE2_END_OF_PROMPT = "<|endofprompt|>"
#: CosyVoice3's system prompt, which leads every text its LM reads (upstream ``example.py``).
COSYVOICE3_SYSTEM_PROMPT = "You are a helpful assistant."
COSYVOICE_VERSIONS = (2, 3)


def _check_version(cosyvoice_version: int) -> None:
    if cosyvoice_version not in COSYVOICE_VERSIONS:
        raise ValueError(f"cosyvoice_version must be one of {COSYVOICE_VERSIONS}, got {cosyvoice_version!r}.")


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
    cosyvoice_version: int = 2,
) -> str:
    """
    Instruct-mode input: ``instruction + "<|endofprompt|>" + text`` (CosyVoice2), or
    ``"You are a helpful assistant. " + instruction + "<|endofprompt|>" + text`` (``cosyvoice_version=3``).

    Exactly one of ``emotion`` (rendered with ``template``) and ``instruction`` (used verbatim) is required.
    """
    _check_version(cosyvoice_version)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"The text to speak must be a non-empty string, got {text!r}.")
    if (emotion is None) == (instruction is None):
        raise ValueError("Pass exactly one of `emotion` (rendered with `template`) and `instruction`.")
    if instruction is None:
        instruction = build_emotion_instruction(emotion, template, extra_aliases)
    for part, name in ((instruction, "instruction"), (text, "text")):
        if COSYVOICE2_END_OF_PROMPT in part:
            raise ValueError(f"The {name} already contains {COSYVOICE2_END_OF_PROMPT!r}: {part!r}.")
    if cosyvoice_version == 3:
        return f"{COSYVOICE3_SYSTEM_PROMPT} {instruction}{COSYVOICE2_END_OF_PROMPT}{text}"
    return f"{instruction}{COSYVOICE2_END_OF_PROMPT}{text}"


def build_plain_text(text: str, cosyvoice_version: int = 2) -> str:
    """The LM text without an instruction: ``text`` (CosyVoice2), ``"You are a helpful assistant.<|endofprompt|>"
    + text`` (CosyVoice3, whose LM needs the ``<|endofprompt|>``)."""
    _check_version(cosyvoice_version)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"The text to speak must be a non-empty string, got {text!r}.")
    if cosyvoice_version == 2:
        return text
    if COSYVOICE2_END_OF_PROMPT in text:
        raise ValueError(f"The text already contains {COSYVOICE2_END_OF_PROMPT!r}: {text!r}.")
    return f"{COSYVOICE3_SYSTEM_PROMPT}{COSYVOICE2_END_OF_PROMPT}{text}"


def split_at_end_of_prompt(ids: list[int], end_of_prompt_id: int) -> tuple[list[int], list[int]]:
    """``(head, spoken)``: the ids up to and including the last ``<|endofprompt|>`` (none without one), the rest."""
    ends = [i for i, token in enumerate(ids) if token == end_of_prompt_id]
    cut = ends[-1] + 1 if ends else 0
    return ids[:cut], ids[cut:]


def join_zero_shot_text(prompt_ids: list[int], text_ids: list[int], end_of_prompt_id: int, cosyvoice_version: int):
    """The LM text ids of a zero-shot row: the prompt transcript before the whole text (CosyVoice2), or after the
    text's system prompt / instruction, right behind its ``<|endofprompt|>`` (CosyVoice3)."""
    _check_version(cosyvoice_version)
    if cosyvoice_version == 2:
        return prompt_ids + text_ids
    head, spoken = split_at_end_of_prompt(text_ids, end_of_prompt_id)
    return head + prompt_ids + spoken


def build_zero_shot_inputs(
    tokenizer,
    text: str,
    prompt_text: str,
    prompt_speech_tokens,
    *,
    speech_token_size: int = 6561,
    cosyvoice_version: int = 2,
) -> dict[str, list[int] | int]:
    """
    CosyVoice2 zero-shot (voice cloning) LM input for one utterance, as upstream's ``frontend_zero_shot`` builds it:
    the LM reads ``[sos, prompt_text + text, task_id, prompt_speech_tokens]`` and continues the prompt speech.
    With ``cosyvoice_version=3`` the transcript follows the text's ``<|endofprompt|>``
    (``[sos, system<|endofprompt|> + prompt_text + text, ...]``); a text without one gets the plain system prompt.

    ``text`` is what the LM reads for the target (plain text, or an instruct text from :func:`build_instruct_text`);
    the transcript and the text are tokenized apart and concatenated. Returns ``text_ids``, ``prompt_speech_ids``
    and ``text_length_for_ratio`` (the target text tokens the length bounds count), ready for
    ``generate_speech_tokens(policy, [text_ids], prompt_speech_ids=[...], text_lengths_for_ratio=[...])``.
    """
    if not isinstance(prompt_text, str) or not prompt_text.strip():
        raise ValueError(f"A zero-shot prompt needs the prompt utterance's transcript, got {prompt_text!r}.")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"The text to speak must be a non-empty string, got {text!r}.")
    prompt_speech = [int(t) for t in prompt_speech_tokens]
    if not prompt_speech or min(prompt_speech) < 0 or max(prompt_speech) >= speech_token_size:
        raise ValueError(
            f"prompt_speech_tokens must be a non-empty list of codebook ids in [0, {speech_token_size}), got "
            f"{prompt_speech[:8]}{'...' if len(prompt_speech) > 8 else ''}."
        )
    if cosyvoice_version == 3 and COSYVOICE2_END_OF_PROMPT not in text:
        text = build_plain_text(text, cosyvoice_version)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    end_id = tokenizer.convert_tokens_to_ids(COSYVOICE2_END_OF_PROMPT)
    spoken = len(split_at_end_of_prompt(text_ids, end_id)[1])
    lm_text = join_zero_shot_text(prompt_ids, text_ids, end_id, cosyvoice_version)
    return {"text_ids": lm_text, "prompt_speech_ids": prompt_speech, "text_length_for_ratio": spoken}


def instruction_words(template: str = "en", emotions=CANONICAL_EMOTIONS) -> list[str]:
    """Whitespace-separated words of the instructions for ``emotions``, in first-seen order: the vocabulary a
    word-level tokenizer (:func:`build_tiny_cosyvoice2_tokenizer`) needs to encode every instruction."""
    words: dict[str, None] = {}
    for emotion in emotions:
        words.update(dict.fromkeys(build_emotion_instruction(emotion, template).split()))
    return list(words)


__all__ = [
    "COSYVOICE3_SYSTEM_PROMPT",
    "EMOTION_INSTRUCTION_TEMPLATES",
    "EMOTION_NAMES_ZH",
    "build_emotion_instruction",
    "build_instruct_text",
    "build_plain_text",
    "build_zero_shot_inputs",
    "instruction_words",
    "join_zero_shot_text",
    "split_at_end_of_prompt",
]
