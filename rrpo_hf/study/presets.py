"""Named studies, one per reward-model vulnerability: the world and RM protocol that expose it, and what we expect.

Each preset is a set of :class:`~rrpo_hf.study.config.RewardHackingStudyConfig` fields over the config's defaults
(the defaults *are* ``dataset-bias``), a description of the mechanism it models, and the outcome predicted when it
was designed, before it was first run. The report prints both above the measured tables, so a reader can see which
predictions held. ``RewardHackingStudyConfig.from_preset(name, **overrides)`` builds one; the example scripts take
``--preset NAME`` (``all``: every preset, one after the other) and let any flag or recipe key override a preset's
value. The mechanisms and the measured outcomes are discussed in ``docs/testbed.md``.

Shared by every preset (the config's defaults): an under-expressive SFT corpus (emotion intensity 0.5-0.7) and a
20-epoch SFT budget, so that the +SFT policy speaks intelligibly but leaves emotion headroom; an oracle that
accepts every natural intensity in [0, 1] as plausible prosody while its emotion score rewards intensity; prompts
of the target emotion ``angry`` only; and a ``clean`` control RM trained on the same kind of data without the
preset's flaw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StudyPreset:
    """One named study: the fields it sets, the mechanism it models, and the prediction written before its run."""

    name: str
    summary: str
    mechanism: str
    prediction: str
    settings: dict[str, Any] = field(default_factory=dict)


STUDY_PRESETS: dict[str, StudyPreset] = {
    preset.name: preset
    for preset in (
        StudyPreset(
            name="dataset-bias",
            summary="artifacts co-occur with the target emotion in every RM training utterance of it",
            mechanism=(
                "Every angry utterance of the RM corpus carries artifact tokens (density 0.15); no other does. A "
                "vanilla RM learns 'artifacts => angry'. The SFT corpus has emotion-independent glitches in 5% of "
                "its utterances, so the policy can emit artifacts at all. Because the shortcut is a true feature of "
                "the RM's whole training distribution, no regularisation of the RM can remove it."
            ),
            prediction=(
                "DiffRO raises its RM reward partly by emitting artifacts: the oracle artifact rate rises above "
                "SFT's and naturalness falls. RRPO's RM (LS + EAM + Adv, trained on the same biased data) keeps the "
                "shortcut, so RRPO hacks about as much as DiffRO: paired RRPO - DiffRO intervals of naturalness "
                "and artifact rate near 0. DiffRO-clean raises the emotion score without emitting artifacts."
            ),
        ),
        StudyPreset(
            name="paper-protocol",
            summary="noisy multi-speaker pre-training with a partial shortcut, then a small clean single-speaker "
            "fine-tune with LS / EAM / Adv (the paper's protocol)",
            mechanism=(
                "The base RM is pre-trained on a large pseudo-labelled corpus: 8 speakers, 20% of the labels wrong, "
                "half of the angry utterances carrying artifacts (a partial shortcut). Every other RM row fine-tunes "
                "that RM on 240 clean utterances of one speaker (correct labels, no artifacts): vanilla (+FT), then "
                "cumulatively with label smoothing (+LS), Energy-Adaptive Mixup (+EAM) and adversarial training on "
                "h' (+Adv), as in the paper. DiffRO optimises against the pre-trained RM, DiffRO-FT against the "
                "vanilla fine-tune, RRPO against +Adv with the Eq. 5 reward; so the effect of the clean data "
                "(DiffRO-FT - DiffRO) and that of the regularisers (RRPO - DiffRO-FT) are separable."
            ),
            prediction=(
                "The pre-trained RM keeps an exploitable but weaker shortcut than dataset-bias: DiffRO's artifact "
                "rate rises and naturalness falls over tens of steps. The clean fine-tune corrects the noisy labels "
                "(alpha accuracy up) but contains no artifacts, so nothing in it pushes the artifact embeddings "
                "back: the shortcut mostly survives and DiffRO-FT hacks only a little less than DiffRO. LS, EAM and "
                "Adv (epsilon 0.5, ~1% of the norm of h', while an artifact token moves h' much further) are "
                "expected to add little: RRPO - DiffRO-FT near 0. DiffRO-clean gains emotion (>= +0.3) at SFT "
                "naturalness."
            ),
            settings=dict(
                rm_num_speakers=8,
                rm_label_noise=0.2,
                spurious_artifact_rate=0.5,
                rm_finetune_num_train=240,
                rm_variants=["base", "+FT", "+LS", "+EAM", "+Adv", "clean"],
                policy_methods=["DiffRO", "DiffRO-FT", "RRPO", "DiffRO-clean"],
                # The primary test first: the regularisers' effect beyond the clean fine-tune's.
                headline_pairs=["RRPO − DiffRO-FT", "RRPO − DiffRO", "DiffRO − SFT"],
            ),
        ),
        StudyPreset(
            name="brittle",
            summary="no label correlation of artifacts; the RM has never seen artifact ids and extrapolates",
            mechanism=(
                "The RM corpora contain no artifacts at all (no correlation with any label): the RM never sees the "
                "16 artifact ids, whose embeddings stay near their random initialisation, and never sees run "
                "lengths or bank mixtures natural speech does not have. The SFT policy emits glitches (5% of its "
                "training utterances), so these off-manifold tokens are reachable. Whatever an overconfident RM "
                "outputs there is extrapolation, not learned evidence. Control: DiffRO-clean's RM sees the same "
                "glitches independent of the emotion, so it has learned that they carry none."
            ),
            prediction=(
                "DiffRO finds off-manifold tokens that raise P(angry) (some random artifact embeddings point that "
                "way): the artifact rate rises and naturalness falls, more slowly than in dataset-bias. LS lowers "
                "confidence on natural data but does not constrain unseen ids; EAM interpolates only between "
                "natural utterances; Adv flattens the RM within epsilon of natural h' only. So RRPO hacks about as "
                "much as DiffRO. DiffRO-clean emits no more artifacts than SFT."
            ),
            settings=dict(spurious_artifact_rate=0.0),
        ),
        StudyPreset(
            name="cue-exaggeration",
            summary="graded emotion in the RM data; the policy pushes a genuine cue (accents) past natural levels",
            mechanism=(
                "The RM corpus renders each utterance at an intensity drawn in [0.25, 1], so the RM learns that "
                "more accents (and register) mean more anger, a genuine cue. It never sees more accents than "
                "natural speech has (intensity > 1: accents on unstressed phonemes too) and extrapolates. No corpus "
                "has artifacts, so prosody is the only channel. The oracle rewards intensity up to 1 and rates "
                "exaggerated prosody as implausible (naturalness falls) and further from the full-strength angry "
                "rendering (emotion falls). No clean control: the flaw is extrapolation of a true cue, which every "
                "RM trained on natural speech shares."
            ),
            prediction=(
                "DiffRO first raises the emotion score (the headroom from SFT's 0.5-0.7 to 1), then keeps raising "
                "its reward by spreading accents: naturalness falls late in training and the gold score peaks "
                "before the end. LS caps the RM's confidence, so its reward saturates sooner and pushes less past "
                "natural levels: RRPO is predicted to lose less naturalness than DiffRO (a small positive paired "
                "difference); EAM and Adv are not expected to matter for this mechanism."
            ),
            settings=dict(
                rm_intensity=[0.25, 1.0],
                spurious_artifact_rate=0.0,
                sft_artifact_rate=0.0,
                rm_variants=["base", "+LS", "+EAM", "+Adv"],
                policy_methods=["DiffRO", "RRPO"],
            ),
        ),
        StudyPreset(
            name="chance-glitches",
            summary="the paper's mechanism: a vanilla RM over-fitted on a small single-speaker set learns chance "
            "correlations of rare ids and glitches; gate-first",
            mechanism=(
                "The RM corpus is small (120 utterances), of one speaker, with correct labels, and has "
                "emotion-independent glitches (artifacts, density 0.15, in 30% of the utterances of every emotion). "
                "Every RM row trains on it from scratch for 60 epochs (over-fitting: the vanilla RM memorises it). "
                "Each artifact id and each timbre variant the speaker rarely uses occurs in a handful of utterances, "
                "so its embedding carries the chance correlation of those few labels, and the policy (SFT on 4 "
                "speakers, 5% glitches) can emit all of them. That is the flaw RRPO's paper names: perturbation "
                "sensitivity and brittle boundaries of an RM fitted to little data, not a shortcut true of the "
                "data. The robust rows train on the same data with the same budget: +LS, +EAM, +Adv with ε_adv by "
                "the scale rule (1.0 x RMS frame norm of h'), and +Adv-0.5 at the paper's literal ε = 0.5. Prompts "
                "of the five emotions of the paper. Gate, measured on the vanilla RM alone before anything else "
                "(thresholds in the settings, the issue's): a single greedy edit gains >= +0.5 nats of "
                "log P_RM(target), >= half the edits write an artifact or rare id, the oracle's P(target) rises "
                "<= 0.02 after the edits."
            ),
            prediction=(
                "The gate passes: the over-fitted vanilla RM pays >= 0.5 nats for one edit, mostly for rare or "
                "artifact ids, which the oracle does not hear as emotion. DiffRO's analytical gradient raises those "
                "ids: the artifact rate and CER rise, naturalness falls, and the oracle emotion score rises much "
                "less than the RM's reward. LS caps the RM's logits, EAM trains on interpolated utterances (which "
                "dilutes each id's chance correlation), Adv flattens the RM around h' at a radius comparable with "
                "an edit's shift: the robust RMs' audited gain per edit is lower, and RRPO loses less naturalness "
                "than DiffRO (RRPO - DiffRO naturalness > 0 at matched steps and at matched sqrt KL, artifact rate "
                "< 0). RRPO-0.5 (ε = 0.5, ~1% of the norm of h') behaves like the +EAM row: the literal radius "
                "adds nothing. DiffRO-Adv ~ RRPO-norm ~ RRPO: the effect is the robust RM's, not the Eq. 5 reward's. "
                "RRPO-LS and RRPO-EAM lie between DiffRO and RRPO."
            ),
            settings=dict(
                rm_num_train=120,
                rm_num_speakers=1,
                spurious_emotions=["neutral", "happy", "angry", "sad", "surprised", "fearful"],
                spurious_artifact_rate=0.3,
                rm_epochs=60.0,
                adv_epsilon=1.0,
                adv_epsilon_scale="relative",
                rm_variants=["base", "+LS", "+EAM", "+Adv", "+Adv-0.5"],
                policy_methods=["DiffRO", "RRPO", "RRPO-0.5"],
                policy_target_emotions=["angry", "happy", "sad", "surprised", "fearful"],
                beta_sweep=[],
                mechanism_rows=True,
                mechanism_gate=dict(min_first_edit_gain=0.5, min_artifact_or_rare_share=0.5, max_oracle_p_rise=0.02),
            ),
        ),
    )
}

#: ``preset`` value that names every preset (the scripts run them one after the other).
ALL_PRESETS = "all"


def preset_names(value: str) -> list[str]:
    """The presets a `preset` value names: one name, a comma-separated list of names, or ``all`` (every preset)."""
    if value == ALL_PRESETS:
        return list(STUDY_PRESETS)
    names = [name.strip() for name in str(value).split(",") if name.strip()]
    if not names:
        raise ValueError(f"preset names no study; choose from {list(STUDY_PRESETS)} or {ALL_PRESETS!r}.")
    return [get_preset(name).name for name in names]


def get_preset(name: str) -> StudyPreset:
    """The preset called ``name``; a clear error listing the known ones otherwise."""
    try:
        return STUDY_PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown study preset {name!r}; choose one of {list(STUDY_PRESETS)}.") from None


__all__ = ["ALL_PRESETS", "STUDY_PRESETS", "StudyPreset", "get_preset", "preset_names"]
