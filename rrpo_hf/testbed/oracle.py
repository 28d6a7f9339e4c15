"""Ground-truth scorers of the testbed: emotion truth, CER, artifact rate, N-MOS and E-MOS analogues.

The oracle reads the generative truth of :class:`~rrpo_hf.testbed.world.EmotionWorld` back from
tokens; it never uses a learned model. All scoring is vectorised over the flat concatenation of
a batch (10,000 utterances score in well under a second on one core).

For an utterance with text ``x`` (``L`` phonemes, language with motif length ``m``), tokens
``t_1..t_n`` and target emotion ``e*``:

1. **Artifact rate**: ``a = #{i : t_i is an artifact id} / n``. Artifact tokens are then removed;
   everything below is computed on the remaining natural tokens, so artifacts carry no emotion.
2. **Content (intelligibility)**: each remaining token maps to its content unit
   ``u = (t mod bank_size) div K`` (register and timbre dropped). Runs of equal units are
   collapsed; each unit of the language maps to ``(phoneme, position in motif)``. A new decoded
   phoneme starts at a unit whose phoneme differs from the previous one or whose motif position
   does not increase; units that belong to no phoneme of the language (other language, unused
   ids) decode to an "unknown" symbol. ``CER = Levenshtein(decoded, x) / L`` on phoneme strings.
3. **Prosody features**: bank fractions ``f = (f_0, f_1, f_2, f_unk)`` of the natural tokens
   (``f_unk``: unused ids) and the mean run length ``ρ = n_natural / #runs``.
   For each emotion ``e`` with rule ``(r_e, d_e, accent_e)`` the oracle renders the *expected*
   features of the text: ``S = ceil(L / stress_period)`` stressed phonemes,
   ``A_e = accent_e·S·(d_e + accent_lengthening)`` accent tokens in bank ``(r_e+1) mod 3``,
   ``B_e = (L·m − accent_e·S)·d_e`` tokens in bank ``r_e``, so
   ``f̂_e[r_e] = B_e/(A_e+B_e)``, ``f̂_e[(r_e+1) mod 3] = A_e/(A_e+B_e)`` and
   ``ρ̂_e = (A_e + B_e)/(L·m) + duration_jitter``.
   Prosody distance: ``D_e = w_bank·‖f − f̂_e‖₁ + w_dur·|ln(ρ/ρ̂_e)|``.
4. **Emotion truth**: ``P(e | tokens, x) = softmax_e(−D_e / T)``; ``emotion_prob = P(e*)``,
   ``emotion_pred = argmax_e P``.
5. **Prosody plausibility**: ``π = exp(−min_e D_e)`` (1 for a perfect rendering of *some* emotion). With
   ``OracleConfig.plausible_intensities`` (default ``(1.0,)``: full-strength renderings only), the minimum runs over
   the expected renderings at every listed emotion intensity ``s`` as well (``docs/testbed.md``, "Emotion
   intensity"): mildly expressed speech is then natural too, while emotion truth (4.) stays measured against the
   full-strength renderings, so the emotion score keeps rewarding intensity.
6. **Naturalness (N-MOS analogue, 1..5)**:
   ``N = 1 + 4·(1 − min(CER, 1))·exp(−κ·a)·π``.
7. **Emotion score (E-MOS analogue, 1..5)**: ``E = 1 + 4·P(e*)``.
8. **Gold score (1..5)**: ``G = sqrt(E·N)``, the geometric mean: high only for speech that is both emotional and
   natural, so a policy cannot buy it with either alone. It is the composite "gold" reward of the
   over-optimisation curves (Gao et al. 2022).

Utterances without natural tokens (empty, or only artifacts) get ``CER = 1``, a uniform emotion
distribution and ``π = 0`` (so ``N = 1``).

Reward hacking shows up as follows: inserting artifacts raises ``a`` and lowers ``N`` but leaves
``P`` unchanged; substituting tokens raises CER and moves ``f`` away from every ``f̂_e``;
repeating tokens multiplies ``ρ`` and lowers ``π``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..data.labels import CANONICAL_EMOTIONS
from .world import NEUTRAL_REGISTER, NUM_REGISTERS, EmotionWorld, TestbedConfig, emotion_to_id, expected_accent_count


#: Per-utterance scalar keys of :meth:`Oracle.score` (averaged by :meth:`Oracle.summarize`).
SCORE_KEYS: tuple[str, ...] = (
    "emotion_prob",
    "emotion_correct",
    "cer",
    "artifact_rate",
    "prosody_plausibility",
    "naturalness",
    "emotion_score",
    "gold_score",
)


@dataclass
class OracleConfig:
    """Weights of the oracle's formulas (see the module docstring)."""

    bank_weight: float = field(default=4.0, metadata={"help": "w_bank: weight of the L1 bank-fraction mismatch."})
    duration_weight: float = field(default=3.0, metadata={"help": "w_dur: weight of |ln(run length ratio)|."})
    temperature: float = field(default=0.5, metadata={"help": "T of the softmax over -D_e."})
    artifact_penalty: float = field(
        default=20.0, metadata={"help": "κ: naturalness factor exp(-κ·artifact_rate); 5% artifacts -> x0.37."}
    )
    plausible_intensities: tuple[float, ...] = field(
        default=(1.0,),
        metadata={
            "help": "Emotion intensities in [0, 1] whose expected renderings count as natural prosody for the "
            "plausibility π. (1.0,): full-strength speech only (weakly expressed speech then reads as implausible); "
            "e.g. 0, 0.1, ..., 1: any natural strength, as a world with expressive headroom needs."
        },
    )

    def __post_init__(self):
        self.plausible_intensities = tuple(float(value) for value in self.plausible_intensities)
        if not self.plausible_intensities or not all(0.0 <= value <= 1.0 for value in self.plausible_intensities):
            raise ValueError(
                f"plausible_intensities must be a non-empty list of intensities in [0, 1], got "
                f"{self.plausible_intensities}."
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if min(self.bank_weight, self.duration_weight, self.artifact_penalty) < 0:
            raise ValueError("bank_weight, duration_weight and artifact_penalty must be >= 0.")


def batched_levenshtein(
    references: np.ndarray, ref_lengths: np.ndarray, hypotheses: np.ndarray, hyp_lengths: np.ndarray
) -> np.ndarray:
    """Edit distances between rows of two padded int arrays, vectorised over the batch.

    Row ``i`` of the DP is computed for every utterance at once; the in-row insertion
    recurrence ``D[i, j] = min_k≤j (D'[i, k] + j − k)`` is a running minimum, so each row is a
    handful of numpy calls. ``D[i, j]`` depends only on prefixes, so padding never leaks into
    the value read at ``(ref_len, hyp_len)``.
    """
    batch, max_hyp = hypotheses.shape
    cols = np.arange(max_hyp + 1)
    prev = np.broadcast_to(cols, (batch, max_hyp + 1)).copy()
    result = np.where(ref_lengths == 0, hyp_lengths, 0).astype(np.int64)
    rows = np.arange(batch)
    for i in range(1, references.shape[1] + 1):
        substitution = prev[:, :-1] + (references[:, i - 1 : i] != hypotheses)
        current = np.empty_like(prev)
        current[:, 0] = i
        current[:, 1:] = np.minimum(prev[:, 1:] + 1, substitution)
        current = np.minimum.accumulate(current - cols, axis=1) + cols
        done = ref_lengths == i
        result[done] = current[rows[done], hyp_lengths[done]]
        prev = current
    return result


def _pad(values: np.ndarray, lengths: np.ndarray, fill: int) -> np.ndarray:
    out = np.full((len(lengths), max(int(lengths.max(initial=0)), 1)), fill, dtype=np.int64)
    mask = np.arange(out.shape[1]) < lengths[:, None]
    out[mask] = values
    return out


class Oracle:
    """Batch scorer with the world's ground truth. ``Oracle(world_or_config, oracle_config=None)``."""

    def __init__(self, world: EmotionWorld | TestbedConfig | None = None, config: OracleConfig | None = None):
        if world is None:
            world = EmotionWorld()
        elif isinstance(world, TestbedConfig):
            world = EmotionWorld(world)
        elif not isinstance(world, EmotionWorld):
            raise TypeError(f"Oracle needs an EmotionWorld or TestbedConfig, got {type(world).__name__}.")
        self.world = world
        self.config = config if config is not None else OracleConfig()
        self._phoneme_index = {
            p: (lang_index, i)
            for lang_index, spec in enumerate(world.config.languages)
            for i, p in enumerate(spec.phonemes)
        }
        self._motif_lengths = np.array([spec.motif_length for spec in world.config.languages], dtype=np.int64)

    # ------------------------------------------------------------------ input handling
    def _parse_texts(self, texts: Sequence[str], languages: Sequence[str] | str | None):
        names = self.world.language_names
        if isinstance(languages, str):
            languages = [languages] * len(texts)
        if languages is not None and len(languages) != len(texts):
            raise ValueError(f"Got {len(texts)} texts but {len(languages)} languages.")
        lang_ids = np.empty(len(texts), dtype=np.int64)
        phonemes = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"Text {i} must be a string of space-separated phonemes, got {type(text).__name__}.")
            symbols = text.split()
            if not symbols:
                raise ValueError(f"Text {i} is empty; the oracle needs the phonemes that were meant to be said.")
            try:
                parsed = [self._phoneme_index[s] for s in symbols]
            except KeyError as err:
                raise ValueError(
                    f"Text {i} ({text!r}) contains {err.args[0]!r}, which is no phoneme of the testbed languages "
                    f"{list(names)}."
                ) from None
            found = {lang for lang, _ in parsed}
            if languages is not None:
                if languages[i] not in names:
                    raise ValueError(f"Unknown language {languages[i]!r} for text {i}; choose one of {list(names)}.")
                expected = names.index(languages[i])
                if found != {expected}:
                    raise ValueError(f"Text {i} ({text!r}) is not written in language {languages[i]!r}.")
            elif len(found) > 1:
                raise ValueError(f"Text {i} ({text!r}) mixes phonemes of several languages.")
            lang_ids[i] = found.pop()
            phonemes.append([p for _, p in parsed])
        lengths = np.array([len(p) for p in phonemes], dtype=np.int64)
        return lang_ids, np.concatenate(phonemes).astype(np.int64), lengths

    def _flatten_tokens(self, speech_tokens):
        arrays = []
        for i, tokens in enumerate(speech_tokens):
            array = np.asarray(tokens)
            if array.ndim != 1:
                raise ValueError(f"speech_tokens[{i}] must be a 1-D sequence of ints, got shape {array.shape}.")
            if array.size and not np.issubdtype(array.dtype, np.integer):
                raise TypeError(f"speech_tokens[{i}] must contain integers, got dtype {array.dtype}.")
            arrays.append(array.astype(np.int64, copy=False))
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        bad = (flat < 0) | (flat >= self.world.codebook_size)
        if bad.any():
            where = int(np.flatnonzero(bad)[0])
            utt = int(np.searchsorted(np.cumsum(lengths), where, side="right"))
            raise ValueError(
                f"speech_tokens[{utt}] contains id {int(flat[where])}, outside the codebook [0, "
                f"{self.world.codebook_size}). Strip special tokens (eos/fill) before scoring, or build the "
                "Oracle with the world whose codebook_size produced these tokens."
            )
        return flat, lengths

    # ------------------------------------------------------------------ scoring
    def score(
        self,
        texts: Sequence[str],
        speech_tokens: Sequence[Sequence[int]],
        target_emotions: Sequence[str | int],
        languages: Sequence[str] | str | None = None,
    ) -> dict[str, np.ndarray]:
        """Score a batch; returns per-utterance arrays (keys in :data:`SCORE_KEYS`, plus extras).

        ``target_emotions`` are canonical names (any alias) or ids of ``CANONICAL_EMOTIONS``.
        ``languages`` (one name or one per text) is inferred from the phonemes when omitted.
        Extras: ``emotion_probs`` (B, 6), ``emotion_pred`` (B,), ``num_tokens`` (B,).
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings (a batch), not a single string.")
        num = len(texts)
        if num == 0:
            raise ValueError("Nothing to score: got an empty batch.")
        if len(speech_tokens) != num or len(target_emotions) != num:
            raise ValueError(
                f"Batch sizes differ: {num} texts, {len(speech_tokens)} token sequences, "
                f"{len(target_emotions)} target emotions."
            )
        targets = np.array([emotion_to_id(e) for e in target_emotions], dtype=np.int64)
        lang_ids, text_flat, text_lengths = self._parse_texts(texts, languages)
        flat, token_lengths = self._flatten_tokens(speech_tokens)
        world, cfg = self.world, self.config
        utt = np.repeat(np.arange(num), token_lengths)

        # 1. artifacts
        is_artifact = flat >= world.first_artifact_id
        artifact_counts = np.bincount(utt, weights=is_artifact, minlength=num)
        artifact_rate = artifact_counts / np.maximum(token_lengths, 1)
        natural, utt = flat[~is_artifact], utt[~is_artifact]
        natural_counts = np.bincount(utt, minlength=num)

        # 2. runs of equal content units (register and timbre dropped); unused ids are unit -1
        bank, unit, _ = world.decompose(natural)
        starts_run = np.ones(len(natural), dtype=bool)
        starts_run[1:] = (unit[1:] != unit[:-1]) | (utt[1:] != utt[:-1])
        run_unit, run_utt = unit[starts_run], utt[starts_run]
        run_counts = np.bincount(run_utt, minlength=num)

        # content decoding: unit -> (phoneme, position in motif) of the utterance's language
        run_lang = lang_ids[run_utt]
        known = run_unit >= 0
        phoneme = np.full(len(run_unit), -1, dtype=np.int64)
        position = np.full(len(run_unit), -1, dtype=np.int64)
        phoneme[known] = world.unit_phoneme[run_lang[known], run_unit[known]]
        position[known] = world.unit_position[run_lang[known], run_unit[known]]
        new_segment = np.ones(len(run_unit), dtype=bool)
        new_segment[1:] = (
            (run_utt[1:] != run_utt[:-1])
            | (phoneme[1:] != phoneme[:-1])
            | (position[1:] <= position[:-1])
            | (phoneme[1:] < 0)
        )
        decoded, decoded_utt = phoneme[new_segment], run_utt[new_segment]
        decoded_lengths = np.bincount(decoded_utt, minlength=num)
        edits = batched_levenshtein(
            _pad(text_flat, text_lengths, fill=-3),
            text_lengths,
            _pad(decoded, decoded_lengths, fill=-2),  # unknown (-1) and padding never equal a phoneme id
            decoded_lengths,
        )
        cer = edits / text_lengths

        # 3. prosody features vs expected renderings of the text for each emotion
        bank_slot = np.where(bank >= 0, bank, NUM_REGISTERS)
        observed = np.bincount(utt * (NUM_REGISTERS + 1) + bank_slot, minlength=num * (NUM_REGISTERS + 1))
        observed = observed.reshape(num, NUM_REGISTERS + 1) / np.maximum(natural_counts, 1)[:, None]
        mean_run = natural_counts / np.maximum(run_counts, 1)

        motif_lengths = self._motif_lengths[lang_ids]
        distance = self._prosody_distance(observed, mean_run, text_lengths, motif_lengths, intensity=1.0)

        logits = -distance / cfg.temperature
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        nearest = distance.min(axis=1)
        for intensity in cfg.plausible_intensities:
            if intensity != 1.0:
                weaker = self._prosody_distance(observed, mean_run, text_lengths, motif_lengths, intensity)
                nearest = np.minimum(nearest, weaker.min(axis=1))
        plausibility = np.exp(-nearest)

        silent = natural_counts == 0
        probs[silent] = 1.0 / len(CANONICAL_EMOTIONS)
        plausibility[silent] = 0.0
        cer[silent] = np.maximum(cer[silent], 1.0)

        rows = np.arange(num)
        emotion_prob = probs[rows, targets]
        emotion_pred = probs.argmax(axis=1)
        naturalness = (
            1.0 + 4.0 * (1.0 - np.minimum(cer, 1.0)) * np.exp(-cfg.artifact_penalty * artifact_rate) * plausibility
        )
        emotion_score = 1.0 + 4.0 * emotion_prob
        return {
            "emotion_prob": emotion_prob,
            "emotion_correct": (emotion_pred == targets) & ~silent,
            "cer": cer,
            "artifact_rate": artifact_rate,
            "prosody_plausibility": plausibility,
            "naturalness": naturalness,
            "emotion_score": emotion_score,
            "gold_score": np.sqrt(emotion_score * naturalness),
            "emotion_probs": probs,
            "emotion_pred": emotion_pred,
            "num_tokens": token_lengths,
        }

    def _prosody_distance(self, observed, mean_run, text_lengths, motif_lengths, intensity: float) -> np.ndarray:
        """``D_e`` (B, 6) of the observed features to each emotion's expected rendering at ``intensity``."""
        cfg = self.config
        expected_fractions, expected_run = self.expected_prosody(text_lengths, motif_lengths, intensity)
        bank_mismatch = np.abs(observed[:, None, :] - expected_fractions).sum(-1)
        with np.errstate(divide="ignore"):
            duration_mismatch = np.abs(np.log(np.maximum(mean_run, 1e-9)[:, None] / expected_run))
        return cfg.bank_weight * bank_mismatch + cfg.duration_weight * duration_mismatch

    def expected_prosody(
        self, num_phonemes: np.ndarray, motif_lengths: np.ndarray, intensity: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Expected bank fractions (B, 6, 4) and mean run lengths (B, 6) of each emotion's rendering.

        At intensity ``s`` in [0, 1] (the world's rule: register, duration and accent each applied with
        probability ``s``), a unit lasts ``d_s = s·d_e + 1 − s`` tokens on average, ``s·S`` stressed phonemes are
        accented, and of the unaccented tokens a share ``s`` is in bank ``r_e``, the rest in the neutral bank.
        ``s = 1`` is the full-strength rendering of the module docstring.
        """
        world, wcfg = self.world, self.world.config
        num_phonemes = np.asarray(num_phonemes, dtype=np.float64)[:, None]
        num_units = num_phonemes * np.asarray(motif_lengths, dtype=np.float64)[:, None]
        stressed = expected_accent_count(num_phonemes, wcfg.stress_period)
        duration = world.emotion_duration[None, :].astype(np.float64)
        accent = world.emotion_accent[None, :].astype(np.float64)
        emotions = np.arange(len(CANONICAL_EMOTIONS))
        fractions = np.zeros((len(num_phonemes), len(CANONICAL_EMOTIONS), NUM_REGISTERS + 1))
        # At s = 1 every factor below is exactly 1 or 0, so the full-strength prototype comes out bit for bit.
        duration = intensity * duration + (1.0 - intensity)
        accented = accent * stressed * intensity
        accent_tokens = accented * (duration + wcfg.accent_lengthening)
        base_tokens = (num_units - accented) * duration
        total = accent_tokens + base_tokens
        fractions[:, emotions, world.emotion_register] = intensity * base_tokens / total
        fractions[:, emotions, NEUTRAL_REGISTER] += (1.0 - intensity) * base_tokens / total
        fractions[:, emotions, (world.emotion_register + 1) % NUM_REGISTERS] += accent_tokens / total
        mean_run = total / num_units + wcfg.duration_jitter
        return fractions, mean_run

    def summarize(
        self,
        texts: Sequence[str],
        speech_tokens: Sequence[Sequence[int]],
        target_emotions: Sequence[str | int],
        languages: Sequence[str] | str | None = None,
    ) -> dict[str, float]:
        """Batch means of the per-utterance scores (``emotion_correct`` mean = oracle emotion accuracy)."""
        scores = self.score(texts, speech_tokens, target_emotions, languages)
        return {key: float(np.mean(scores[key])) for key in SCORE_KEYS}

    def to_dict(self) -> dict:
        return {"world": self.world.config.to_dict(), "oracle": asdict(self.config)}


__all__ = ["SCORE_KEYS", "Oracle", "OracleConfig", "batched_levenshtein"]
