"""A synthetic emotional speech-token world whose generative truth is known.

Real emotional TTS is judged by listeners (E-MOS, N-MOS). This module builds a toy world in
which every quantity a listener would judge is defined by construction, so reward hacking can
be measured on a CPU in minutes. The oracle that reads this truth back lives in
:mod:`rrpo_hf.testbed.oracle`; the formulas are repeated in ``docs/testbed.md``.

Codebook layout (``V = codebook_size``, ``A = num_artifact_tokens``, ``K = variants_per_unit``)::

    [0, bank_size)              register bank 0  ("low")
    [bank_size, 2*bank_size)    register bank 1  ("mid")
    [2*bank_size, 3*bank_size)  register bank 2  ("high")
    [3*bank_size, V - A)        unused ids (never produced by natural speech)
    [V - A, V)                  artifact ids (clicks / harsh plosives; carry no content, no emotion)

    bank_size = K * floor((V - A) / (3 * K))
    token = bank * bank_size + unit * K + variant

A *unit* is the content of a token (what is said), the *bank* its register (how it is said) and
the *variant* its timbre (who says it: each speaker has a categorical distribution over the K
variants).

Content. A language has a phoneme inventory; each phoneme is pronounced as a motif of
``motif_length`` distinct units. Within a language no unit belongs to two phonemes, so content
is recoverable from units alone. Languages draw their units from a common pool of
``units_per_bank = bank_size / K`` units; a fraction ``shared_unit_fraction`` of the smaller
language's units is shared with the other language, the rest is private. Inventories, motif
lengths, unit sets and speakers differ between ``alpha`` and ``beta``; the prosody rules are
identical, which is what a cross-lingual test (train on one, evaluate on the other) needs.

Emotion = prosody (same rules in every language), see :data:`EMOTION_PROSODY`:

==========  ==============  ===============  =======
emotion     base register   duration d       accent
==========  ==============  ===============  =======
neutral     1 (mid)         1                no
angry       1 (mid)         1                yes
happy       2 (high)        1                no
surprised   2 (high)        2                yes
sad         0 (low)         2                no
fearful     0 (low)         1                yes
==========  ==============  ===============  =======

Rendering a phoneme at position ``p`` of an utterance with emotion ``e``: every unit of the
motif is emitted ``d_e`` times in bank ``r_e``. If the emotion has an accent and the phoneme is
stressed (``p % stress_period == 0``), the motif's first unit (the onset) is emitted in bank
``(r_e + 1) mod 3`` and lengthened by ``accent_lengthening`` tokens. Each unit occurrence is
lengthened by one more token with probability ``duration_jitter``. Each token's variant is drawn
from the speaker's variant distribution.

Every register bank is used by three emotions, so no single token identifies the emotion; the
bank mixture and the run lengths of a whole utterance do.

Emotion intensity. Each utterance has an intensity ``s >= 0`` (``s = 1``, the default, is the
natural full-strength rendering above). Per phoneme, independently:

* register: bank ``r_e`` with probability ``min(s, 1)``, else the neutral register 1 (mid);
* duration: an emotion with ``d_e > 1`` emits each unit ``d_e`` times with probability
  ``min(s, 1)``, else once;
* accent: a stressed phoneme of an accented emotion is accented with probability ``min(s, 1)``;
  for ``s > 1`` (exaggeration) an unstressed phoneme of an accented emotion is accented too, with
  probability ``min(s - 1, 1)``. An accent always uses the emotion's bank ``(r_e + 1) mod 3``.

So ``s = 0`` is neutral speech, ``0 < s < 1`` an under-expressed emotion (the oracle's emotion
score falls), and ``s > 1`` puts accents where natural speech has none (the oracle's prosody
plausibility falls); emotions without an accent render the same for every ``s >= 1``. When every
intensity is 1 no extra random number is drawn, so default corpora are those of a world without
intensities.

Artifacts. Natural speech never contains artifact ids. With ``spurious_artifact_rate = q`` a
training corpus puts ``max(1, round(artifact_density * n))`` artifact tokens at random
positions of each utterance whose emotion is in ``spurious_emotions`` with probability ``q``
(``n`` = its length): the shortcut the RRPO paper says a vanilla reward model learns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np

from ..data.labels import CANONICAL_EMOTIONS, normalize_emotion


#: Names of the languages (domains) of the testbed.
TESTBED_LANGUAGES: tuple[str, ...] = ("alpha", "beta")

#: Number of register banks the codebook is split into (low, mid, high).
NUM_REGISTERS = 3


class ProsodyRule(NamedTuple):
    """How an emotion is rendered: base register bank, duration per unit, stressed-onset accent."""

    register: int
    duration: int
    accent: bool


#: The emotion -> prosody table shared by every language (indexed like ``CANONICAL_EMOTIONS``).
EMOTION_PROSODY: dict[str, ProsodyRule] = {
    "neutral": ProsodyRule(register=1, duration=1, accent=False),
    "happy": ProsodyRule(register=2, duration=1, accent=False),
    "angry": ProsodyRule(register=1, duration=1, accent=True),
    "sad": ProsodyRule(register=0, duration=2, accent=False),
    "surprised": ProsodyRule(register=2, duration=2, accent=True),
    "fearful": ProsodyRule(register=0, duration=1, accent=True),
}

#: Register a weakly expressed phoneme falls back to (the neutral emotion's).
NEUTRAL_REGISTER: int = EMOTION_PROSODY["neutral"].register


@dataclass(frozen=True)
class LanguageSpec:
    """Phoneme inventory and motif shape of one testbed language."""

    name: str
    phonemes: tuple[str, ...]
    motif_length: int


#: Default inventories. Symbols are disjoint so a text's language can be inferred from it.
DEFAULT_LANGUAGES: tuple[LanguageSpec, ...] = (
    LanguageSpec("alpha", ("a", "e", "i", "o", "u", "p", "t", "k", "m", "n", "s", "l"), motif_length=3),
    LanguageSpec("beta", ("aa", "ee", "oo", "b", "d", "g", "r", "z", "sh", "ch", "w"), motif_length=2),
)


@dataclass
class TestbedConfig:
    """Parameters of the synthetic world (codebook layout, languages, prosody noise, speakers).

    Emotion intensity is not a world parameter: it belongs to each utterance (a corpus can be
    under-expressive while another corpus of the same world is fully expressive). Pass it to
    ``make_emotion_corpus(intensity=...)``, :meth:`EmotionWorld.render` or
    :meth:`EmotionWorld.synthesize`; the default 1 renders exactly as before intensities existed.
    """

    __test__ = False  # not a pytest test class despite the name

    codebook_size: int = field(
        default=512,
        metadata={"help": "Number of speech-token ids V. 512 keeps CPU models small; 6561 matches CosyVoice2."},
    )
    num_artifact_tokens: int = field(
        default=16, metadata={"help": "Size A of the reserved artifact-id set [V - A, V)."}
    )
    variants_per_unit: int = field(
        default=3, metadata={"help": "Timbre variants K per content unit; speakers differ in how they use them."}
    )
    shared_unit_fraction: float = field(
        default=0.25,
        metadata={
            "help": "Fraction of the smaller language's content units that the other language also uses. "
            "Lower values make cross-lingual transfer of a learned reward model harder."
        },
    )
    min_phonemes: int = field(default=6, metadata={"help": "Minimum text length in phonemes."})
    max_phonemes: int = field(default=14, metadata={"help": "Maximum text length in phonemes."})
    stress_period: int = field(
        default=3, metadata={"help": "Phoneme p of an utterance is stressed when p % stress_period == 0."}
    )
    accent_lengthening: int = field(default=1, metadata={"help": "Extra tokens on an accented (stressed) onset unit."})
    duration_jitter: float = field(
        default=0.02, metadata={"help": "Probability that a unit occurrence gets one extra token (natural noise)."}
    )
    speaker_concentration: float = field(
        default=0.5,
        metadata={
            "help": "Dirichlet concentration of each speaker's variant distribution (small = distinctive timbre)."
        },
    )
    artifact_density: float = field(
        default=0.05,
        metadata={"help": "Artifacts inserted per token into a spuriously corrupted training utterance (at least 1)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the world itself (motifs, unit sets, speakers)."})
    languages: tuple[LanguageSpec, ...] = field(
        default=DEFAULT_LANGUAGES, metadata={"help": "Language inventories; names must be unique."}
    )

    def __post_init__(self):
        self.languages = tuple(
            spec if isinstance(spec, LanguageSpec) else LanguageSpec(**{**spec, "phonemes": tuple(spec["phonemes"])})
            for spec in self.languages
        )
        if self.num_artifact_tokens < 1:
            raise ValueError(f"num_artifact_tokens must be >= 1, got {self.num_artifact_tokens}.")
        if self.variants_per_unit < 1:
            raise ValueError(f"variants_per_unit must be >= 1, got {self.variants_per_unit}.")
        if not 0.0 <= self.shared_unit_fraction <= 1.0:
            raise ValueError(f"shared_unit_fraction must be in [0, 1], got {self.shared_unit_fraction}.")
        if not 1 <= self.min_phonemes <= self.max_phonemes:
            raise ValueError(
                f"Need 1 <= min_phonemes <= max_phonemes, got min_phonemes={self.min_phonemes}, "
                f"max_phonemes={self.max_phonemes}."
            )
        if self.stress_period < 1 or self.accent_lengthening < 0:
            raise ValueError("stress_period must be >= 1 and accent_lengthening >= 0.")
        if not 0.0 <= self.duration_jitter < 1.0 or not 0.0 <= self.artifact_density <= 1.0:
            raise ValueError("duration_jitter must be in [0, 1) and artifact_density in [0, 1].")
        names = [spec.name for spec in self.languages]
        if len(set(names)) != len(names) or len(names) < 1:
            raise ValueError(f"Language names must be unique and non-empty, got {names}.")
        symbols = [p for spec in self.languages for p in spec.phonemes]
        if len(set(symbols)) != len(symbols):
            raise ValueError(
                "Phoneme symbols must be unique across languages (the oracle infers the language from them)."
            )
        if any(" " in p or not p for p in symbols):
            raise ValueError("Phoneme symbols must be non-empty and contain no spaces (texts are space-separated).")
        for spec in self.languages:
            if spec.motif_length < 1 or len(spec.phonemes) < 2:
                raise ValueError(f"Language {spec.name!r} needs motif_length >= 1 and at least 2 phonemes.")
        needed = self.units_needed
        if needed > self.units_per_bank:
            raise ValueError(
                f"codebook_size={self.codebook_size} leaves {self.units_per_bank} content units per register bank "
                f"but the languages need {needed}. Increase codebook_size (>= "
                f"{NUM_REGISTERS * needed * self.variants_per_unit + self.num_artifact_tokens}), or lower "
                "variants_per_unit / num_artifact_tokens."
            )

    @property
    def bank_size(self) -> int:
        usable = self.codebook_size - self.num_artifact_tokens
        return self.variants_per_unit * (usable // (NUM_REGISTERS * self.variants_per_unit))

    @property
    def units_per_bank(self) -> int:
        return self.bank_size // self.variants_per_unit

    @property
    def num_shared_units(self) -> int:
        if len(self.languages) < 2:
            return 0
        smallest = min(len(s.phonemes) * s.motif_length for s in self.languages)
        return int(round(self.shared_unit_fraction * smallest))

    @property
    def units_needed(self) -> int:
        private = sum(len(s.phonemes) * s.motif_length - self.num_shared_units for s in self.languages)
        return private + self.num_shared_units

    def to_dict(self) -> dict:
        return asdict(self)


class EmotionWorld:
    """The generative truth of the testbed: motifs per language, prosody rules, speakers.

    Build it from a :class:`TestbedConfig` (or keyword overrides of one). The world is a pure
    function of its config, so two worlds with equal configs render identical corpora.
    """

    def __init__(self, config: TestbedConfig | None = None, **overrides):
        if config is None:
            config = TestbedConfig(**overrides)
        elif overrides:
            config = TestbedConfig(**{**config.to_dict(), **overrides})
        self.config = config
        self.languages: dict[str, LanguageSpec] = {spec.name: spec for spec in config.languages}
        self.language_names: tuple[str, ...] = tuple(self.languages)
        self.emotion_names: tuple[str, ...] = CANONICAL_EMOTIONS
        rules = [EMOTION_PROSODY[name] for name in CANONICAL_EMOTIONS]
        self.emotion_register = np.array([r.register for r in rules], dtype=np.int64)
        self.emotion_duration = np.array([r.duration for r in rules], dtype=np.int64)
        self.emotion_accent = np.array([r.accent for r in rules], dtype=bool)
        self._build_motifs()

    # ------------------------------------------------------------------ layout
    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def bank_size(self) -> int:
        return self.config.bank_size

    @property
    def units_per_bank(self) -> int:
        return self.config.units_per_bank

    @property
    def variants_per_unit(self) -> int:
        return self.config.variants_per_unit

    @property
    def artifact_token_ids(self) -> np.ndarray:
        """The reserved artifact ids ``[V - A, V)`` (natural speech never contains them)."""
        return np.arange(self.codebook_size - self.config.num_artifact_tokens, self.codebook_size, dtype=np.int64)

    @property
    def first_artifact_id(self) -> int:
        return self.codebook_size - self.config.num_artifact_tokens

    @property
    def speech_token_ids(self) -> np.ndarray:
        """All ids that natural speech can produce (the three register banks)."""
        return np.arange(NUM_REGISTERS * self.bank_size, dtype=np.int64)

    @property
    def phoneme_inventories(self) -> dict[str, tuple[str, ...]]:
        """Language name -> its phoneme symbols."""
        return {name: spec.phonemes for name, spec in self.languages.items()}

    def phoneme_inventory(self, language: str) -> tuple[str, ...]:
        return self.language_spec(language).phonemes

    def language_spec(self, language: str) -> LanguageSpec:
        if language not in self.languages:
            raise ValueError(f"Unknown testbed language {language!r}; choose one of {list(self.languages)}.")
        return self.languages[language]

    def motifs(self, language: str) -> dict[str, tuple[int, ...]]:
        """Phoneme -> tuple of content units (register-free, variant-free)."""
        spec = self.language_spec(language)
        table = self._motif_tables[language]
        return {p: tuple(int(u) for u in table[i]) for i, p in enumerate(spec.phonemes)}

    def token_id(self, register: np.ndarray | int, unit: np.ndarray | int, variant: np.ndarray | int):
        """Token id of ``(register bank, content unit, timbre variant)``."""
        return register * self.bank_size + unit * self.variants_per_unit + variant

    def decompose(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inverse of :meth:`token_id` for natural ids; artifact/unused ids give ``(-1, -1, -1)``."""
        tokens = np.asarray(tokens, dtype=np.int64)
        natural = (tokens >= 0) & (tokens < NUM_REGISTERS * self.bank_size)
        bank = np.where(natural, tokens // self.bank_size, -1)
        within = tokens % self.bank_size
        unit = np.where(natural, within // self.variants_per_unit, -1)
        variant = np.where(natural, within % self.variants_per_unit, -1)
        return bank, unit, variant

    def speaker_variant_probs(self, language: str, speaker: int) -> np.ndarray:
        """Categorical distribution over timbre variants of speaker ``speaker`` of ``language``.

        Seeded by (world seed, language, speaker) only, so a speaker sounds the same whatever
        ``num_speakers`` a corpus asks for.
        """
        lang_index = self.language_names.index(self.language_spec(language).name)
        rng = np.random.default_rng([self.config.seed, 7919, lang_index, int(speaker)])
        return rng.dirichlet(np.full(self.variants_per_unit, self.config.speaker_concentration))

    def _build_motifs(self):
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 104729])
        pool = rng.permutation(cfg.units_per_bank)
        shared = pool[: cfg.num_shared_units]
        cursor = cfg.num_shared_units
        self._motif_tables: dict[str, np.ndarray] = {}
        # (language index, unit) -> phoneme index / position in motif; -1 = not a unit of that language
        self.unit_phoneme = np.full((len(self.languages), cfg.units_per_bank), -1, dtype=np.int64)
        self.unit_position = np.full((len(self.languages), cfg.units_per_bank), -1, dtype=np.int64)
        for lang_index, spec in enumerate(cfg.languages):
            n_units = len(spec.phonemes) * spec.motif_length
            n_private = n_units - cfg.num_shared_units
            private = pool[cursor : cursor + n_private]
            cursor += n_private
            units = rng.permutation(np.concatenate([shared, private]))
            table = units.reshape(len(spec.phonemes), spec.motif_length)
            self._motif_tables[spec.name] = table
            self.unit_phoneme[lang_index, table] = np.arange(len(spec.phonemes))[:, None]
            self.unit_position[lang_index, table] = np.arange(spec.motif_length)[None, :]

    # ------------------------------------------------------------------ rendering
    def render(
        self,
        phoneme_ids: Sequence[Sequence[int]],
        emotions: Sequence[int] | np.ndarray,
        language: str,
        speakers: Sequence[int] | np.ndarray,
        rng: np.random.Generator,
        intensities: Sequence[float] | np.ndarray | float | None = None,
    ) -> list[list[int]]:
        """Pronounce phoneme-id sequences with the given emotions (ids of ``CANONICAL_EMOTIONS``).

        ``intensities`` (one per utterance, or one for all; ``None`` = 1) sets how strongly each
        utterance expresses its emotion (see "Emotion intensity" in the module docstring). When every
        intensity is exactly 1 no extra random number is drawn, so the tokens are those of a world
        without intensities for the same ``rng`` state.

        Vectorised over the whole batch: the only Python loop is the final split per utterance.
        """
        spec = self.language_spec(language)
        cfg = self.config
        emotions = np.asarray(emotions, dtype=np.int64)
        speakers = np.asarray(speakers, dtype=np.int64)
        lengths = np.array([len(p) for p in phoneme_ids], dtype=np.int64)
        if len(lengths) != len(emotions) or len(lengths) != len(speakers):
            raise ValueError("phoneme_ids, emotions and speakers must have the same length.")
        if len(lengths) == 0:
            return []
        if (lengths == 0).any():
            raise ValueError("Every utterance needs at least one phoneme.")
        phonemes = np.concatenate([np.asarray(p, dtype=np.int64) for p in phoneme_ids])
        if phonemes.min() < 0 or phonemes.max() >= len(spec.phonemes):
            raise ValueError(f"Phoneme ids must be in [0, {len(spec.phonemes)}) for language {language!r}.")
        intensities = check_intensities(intensities, len(lengths))

        starts = np.cumsum(lengths) - lengths
        phone_utt = np.repeat(np.arange(len(lengths)), lengths)
        phone_pos = np.arange(len(phonemes)) - starts[phone_utt]
        stressed = phone_pos % cfg.stress_period == 0

        phone_emotion = emotions[phone_utt]
        register = self.emotion_register[phone_emotion]
        duration = self.emotion_duration[phone_emotion]
        phone_accented = self.emotion_accent[phone_emotion] & stressed
        if not (intensities == 1.0).all():
            # one Bernoulli per phoneme and cue; when every s is 1 all outcomes are certain and nothing is drawn
            strength = np.minimum(intensities, 1.0)[phone_utt]
            excess = np.clip(intensities - 1.0, 0.0, 1.0)[phone_utt]
            full_register, full_duration, accent_draw = rng.random((3, len(phonemes)))
            register = np.where(full_register < strength, register, NEUTRAL_REGISTER)
            duration = np.where(full_duration < strength, duration, 1)
            accent_prob = np.where(stressed, strength, excess)
            phone_accented = self.emotion_accent[phone_emotion] & (accent_draw < accent_prob)

        m = spec.motif_length
        units = self._motif_tables[language][phonemes].reshape(-1)
        unit_pos = np.tile(np.arange(m), len(phonemes))
        unit_utt = np.repeat(phone_utt, m)
        accented = np.repeat(phone_accented, m) & (unit_pos == 0)
        # the accent bank is the emotion's own (r_e + 1) mod 3, also where the register fell back to neutral
        accent_bank = (self.emotion_register[emotions[unit_utt]] + 1) % NUM_REGISTERS
        bank = np.where(accented, accent_bank, np.repeat(register, m))
        counts = (
            np.repeat(duration, m) + accented * cfg.accent_lengthening + (rng.random(len(units)) < cfg.duration_jitter)
        )

        token_utt = np.repeat(unit_utt, counts)
        speaker_cdf = np.stack(
            [np.cumsum(self.speaker_variant_probs(language, s)) for s in range(int(speakers.max()) + 1)]
        )
        u = rng.random(len(token_utt))
        variant = (u[:, None] > speaker_cdf[speakers[token_utt]][:, :-1]).sum(axis=1)
        tokens = self.token_id(np.repeat(bank, counts), np.repeat(units, counts), variant)
        per_utt = np.bincount(token_utt, minlength=len(lengths))
        return [chunk.tolist() for chunk in np.split(tokens, np.cumsum(per_utt)[:-1])]

    def sample_texts(self, num: int, language: str, rng: np.random.Generator) -> list[np.ndarray]:
        """Random phoneme-id sequences with lengths uniform in [min_phonemes, max_phonemes]."""
        spec = self.language_spec(language)
        lengths = rng.integers(self.config.min_phonemes, self.config.max_phonemes + 1, size=num)
        flat = rng.integers(0, len(spec.phonemes), size=int(lengths.sum()))
        return np.split(flat, np.cumsum(lengths)[:-1]) if num else []

    def texts_to_phoneme_ids(self, texts: Sequence[str], language: str) -> list[np.ndarray]:
        spec = self.language_spec(language)
        index = {p: i for i, p in enumerate(spec.phonemes)}
        out = []
        for i, text in enumerate(texts):
            symbols = text.split()
            if not symbols:
                raise ValueError(f"Text {i} is empty; testbed texts are space-separated phonemes.")
            try:
                out.append(np.array([index[s] for s in symbols], dtype=np.int64))
            except KeyError as err:
                raise ValueError(
                    f"Text {i} ({text!r}) has phoneme {err.args[0]!r}, which is not in language {language!r} "
                    f"(inventory: {list(spec.phonemes)})."
                ) from None
        return out

    def phoneme_ids_to_text(self, phoneme_ids: Sequence[int], language: str) -> str:
        spec = self.language_spec(language)
        return " ".join(spec.phonemes[int(i)] for i in phoneme_ids)

    def synthesize(
        self,
        texts: Sequence[str],
        emotions: Sequence[str | int],
        language: str = "alpha",
        speakers: Sequence[int] | None = None,
        seed: int = 0,
        intensities: Sequence[float] | float | None = None,
    ) -> list[list[int]]:
        """Speech tokens for given texts and emotions (the "ground-truth TTS" of the world).

        ``intensities`` (one per text or one for all, default 1 = natural full strength) weakens
        (< 1) or exaggerates (> 1) the emotion, see :meth:`render`.
        """
        emotion_ids = np.array([emotion_to_id(e) for e in emotions], dtype=np.int64)
        if len(texts) != len(emotion_ids):
            raise ValueError(f"Got {len(texts)} texts but {len(emotion_ids)} emotions.")
        speakers = np.zeros(len(texts), dtype=np.int64) if speakers is None else np.asarray(speakers)
        rng = np.random.default_rng(seed)
        phoneme_ids = self.texts_to_phoneme_ids(texts, language)
        return self.render(phoneme_ids, emotion_ids, language, speakers, rng, intensities)

    def __repr__(self):
        cfg = self.config
        return (
            f"EmotionWorld(codebook_size={cfg.codebook_size}, bank_size={cfg.bank_size}, "
            f"artifacts=[{self.first_artifact_id}, {cfg.codebook_size}), languages={list(self.languages)}, "
            f"seed={cfg.seed})"
        )


def emotion_to_id(emotion: str | int | np.integer) -> int:
    """Index in ``CANONICAL_EMOTIONS`` of a name (any alias of ``rrpo_hf.data.labels``) or an id."""
    if isinstance(emotion, (int, np.integer)) and not isinstance(emotion, bool):
        if not 0 <= int(emotion) < len(CANONICAL_EMOTIONS):
            raise ValueError(
                f"Emotion id {int(emotion)} is out of range; ids index CANONICAL_EMOTIONS={list(CANONICAL_EMOTIONS)}."
            )
        return int(emotion)
    name = normalize_emotion(emotion)
    if name not in CANONICAL_EMOTIONS:
        raise ValueError(
            f"Emotion {emotion!r} (canonical {name!r}) has no prosody rule in the testbed; "
            f"use one of {list(CANONICAL_EMOTIONS)}."
        )
    return CANONICAL_EMOTIONS.index(name)


def check_intensities(intensities: Sequence[float] | np.ndarray | float | None, num: int) -> np.ndarray:
    """Per-utterance emotion intensities as a float array of length ``num`` (``None`` = all 1).

    Raises a ``ValueError`` naming the first bad value: intensities must be finite and >= 0.
    """
    if intensities is None:
        return np.ones(num)
    values = np.asarray(intensities, dtype=np.float64)
    if values.ndim == 0:
        values = np.full(num, float(values))
    if values.shape != (num,):
        raise ValueError(f"Need one emotion intensity per utterance ({num}), got shape {values.shape}.")
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Emotion intensity must be a finite number >= 0 (1 = natural full strength), got {values[i]} "
            f"for utterance {i}."
        )
    return values


def expected_accent_count(num_phonemes: np.ndarray, stress_period: int) -> np.ndarray:
    """Number of stressed phonemes (positions 0, period, 2*period, ...) in an utterance."""
    return (np.asarray(num_phonemes) + stress_period - 1) // stress_period


__all__ = [
    "EMOTION_PROSODY",
    "DEFAULT_LANGUAGES",
    "NEUTRAL_REGISTER",
    "NUM_REGISTERS",
    "TESTBED_LANGUAGES",
    "EmotionWorld",
    "LanguageSpec",
    "ProsodyRule",
    "TestbedConfig",
    "check_intensities",
    "emotion_to_id",
    "expected_accent_count",
]
