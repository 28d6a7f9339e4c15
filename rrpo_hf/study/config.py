"""What the reward-hacking study runs: its settings, the ablation and policy rows, and the tables' columns."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from ..data.labels import normalize_emotion
from ..testbed import OracleConfig, TestbedConfig
from .gate import MechanismGate
from .presets import ALL_PRESETS, STUDY_PRESETS, get_preset, preset_names


#: Reward-model ablation rows of the paper's Table 2 (cumulative, each one flag away from the previous one).
RM_VARIANTS: dict[str, dict[str, Any]] = {
    "base": dict(label_smoothing=0.0, use_eam=False, adv_alpha=0.0),
    # Vanilla fine-tune of the pre-trained base RM on the small clean set (needs `rm_finetune_num_train`).
    "+FT": dict(label_smoothing=0.0, use_eam=False, adv_alpha=0.0),
    "+LS": dict(label_smoothing=0.1, use_eam=False, adv_alpha=0.0),
    "+EAM": dict(label_smoothing=0.1, use_eam=True, adv_alpha=0.0),
    "+Adv": dict(label_smoothing=0.1, use_eam=True, adv_alpha=0.5),
    # +Adv at the paper's literal radius, ε_adv = 0.5 in absolute units, whatever the study's `adv_epsilon` and
    # `adv_epsilon_scale` (an extra row where those follow the scale rule).
    "+Adv-0.5": dict(label_smoothing=0.1, use_eam=True, adv_alpha=0.5, adv_epsilon=0.5, adv_epsilon_scale="absolute"),
    # Control, not a paper row: the vanilla RM trained on the artifact-free corpus (no shortcut to learn).
    "clean": dict(label_smoothing=0.0, use_eam=False, adv_alpha=0.0),
}

#: Reward-model variants trained on the clean corpus (no shortcut, correct labels) instead of the RM corpus.
CLEAN_CORPUS_VARIANTS = frozenset({"clean"})

#: Reward-model variants that, when the study has a fine-tuning set (`rm_finetune_num_train` > 0), fine-tune the
#: pre-trained base RM on it (the paper's protocol) instead of training from scratch on the RM corpus.
FINETUNED_VARIANTS = frozenset({"+FT", "+LS", "+EAM", "+Adv", "+Adv-0.5"})


#: What the remedy rows were predicted to do, written before their first run (the report prints it above the tables).
REMEDY_PREDICTION = (
    "Where the hacking goes through artifacts (dataset-bias, paper-protocol), only the quality reward sees them: the "
    "multi-task RM's quality head learned oracle naturalness classes of speech that includes artifact-laden "
    "utterances, so DiffRO+MTR keeps the artifact rate near SFT's and naturalness above DiffRO's. Its ASR head "
    "learned to transcribe degraded speech, artifacts included, so the ASR reward and the CER gate leave artifacts "
    "unpunished: DiffRO+ASR, RRPO+ASR and DiffRO-gated emit about as many artifacts as DiffRO and RRPO, with a CER at "
    "or below theirs. The ensemble members are trained on the same biased data, so every member learns the shortcut "
    "(an error all members share, Eisenstein et al. 2023): the mean and min ensembles hack like DiffRO, and "
    "mean - std, which penalises only disagreement, helps at most slightly."
)


class PolicyMethod(NamedTuple):
    """How a Table 1 row optimises the policy: the emotion reward model (an `RM_VARIANTS` row), the reward's label
    smoothing ε (Eq. 2) and adversarial weight α (Eq. 5), and the other hacking remedies of `DiffROTrainer`'s
    several rewards (docs/architecture.md, "Several rewards"), off by default."""

    rm_variant: str
    label_smoothing: float = 0.0
    adv_alpha: float = 0.0
    #: add the multi-task RM's ASR reward ``-log P_CTC(text | tokens)`` per symbol (weight `asr_reward_weight`)
    asr_reward: bool = False
    #: add the multi-task RM's quality reward ``-log P(best MOS class)`` (weight `quality_reward_weight`)
    quality_reward: bool = False
    #: aggregation of an ensemble of `ensemble_size` emotion RMs of this variant that differ in seed (None: one RM)
    ensemble: str | None = None
    #: gate the emotion loss: it counts only for samples whose ASR transcript has CER <= `gate_max_cer`
    cer_gate: bool = False
    #: `DiffROConfig.gumbel_sampling`: "full" (DiffRO's full softmax) or "rollout" (the rollout's top-k / top-p)
    gumbel_sampling: str = "full"
    #: "diffro" (the analytical gradient through the Gumbel sample) or "grpo" (`CosyVoiceGRPOTrainer`: the policy
    #: gradient of group-relative advantages of the same reward, read on generated tokens)
    optimizer: str = "diffro"
    #: scale the emotion reward by 1 / (1 + adv_alpha) (`DiffROConfig.reward_weights`): Eq. 5's loss is the
    #: label-smoothed CE plus α times its FGM-perturbed copy, ~(1 + α) times the CE where ε is small against ‖h'‖
    normalize_reward: bool = False

    @property
    def needs_multitask_rm(self) -> bool:
        return self.asr_reward or self.quality_reward or self.cer_gate

    @property
    def reward_weight(self) -> float:
        """Weight of the emotion reward in the trainer's loss: 1, or 1 / (1 + α) with `normalize_reward`."""
        return 1.0 / (1.0 + self.adv_alpha) if self.normalize_reward else 1.0


#: Policy-optimisation rows of the paper's Table 1, and of the other remedies (`reward_remedies`). DiffRO's reward
#: is the plain cross-entropy of a vanilla RM; RRPO's is Eq. 5.
POLICY_METHODS: dict[str, PolicyMethod] = {
    "DiffRO": PolicyMethod("base"),
    "RRPO": PolicyMethod("+Adv", 0.1, 0.5),
    # RRPO against the +Adv RM trained at the paper's literal ε_adv = 0.5 (absolute); its reward reads the same ε.
    "RRPO-0.5": PolicyMethod("+Adv-0.5", 0.1, 0.5),
    # DiffRO against the vanilla fine-tune of the pre-trained RM: the effect of the clean data alone.
    "DiffRO-FT": PolicyMethod("+FT"),
    # Control: DiffRO against the RM without the shortcut. Artifacts that appear under DiffRO but not here are
    # exploitation of the shortcut; damage that appears here too is not caused by it.
    "DiffRO-clean": PolicyMethod("clean"),
    # The other remedies, each against the base RM unless it is RRPO's (REMEDY_DESCRIPTIONS says what each does).
    "DiffRO+ASR": PolicyMethod("base", asr_reward=True),
    "RRPO+ASR": PolicyMethod("+Adv", 0.1, 0.5, asr_reward=True),
    "DiffRO+MTR": PolicyMethod("base", asr_reward=True, quality_reward=True),
    "DiffRO-ens-mean": PolicyMethod("base", ensemble="mean"),
    "DiffRO-ens-min": PolicyMethod("base", ensemble="min"),
    "DiffRO-ens-mean_minus_std": PolicyMethod("base", ensemble="mean_minus_std"),
    "DiffRO-gated": PolicyMethod("base", cer_gate=True),
    # What the reward reads: DiffRO whose Gumbel sample comes from the rollout's nucleus (top-k / top-p) instead of
    # the full softmax, so the RM scores the kind of token generation emits, not tail tokens it rarely does.
    "DiffRO-nucleus": PolicyMethod("base", gumbel_sampling="rollout"),
    # The policy gradient on the same rewards (`recipes/toy/study_grpo.yaml`): GRPO against DiffRO's vanilla RM,
    # against RRPO's +Adv RM with RRPO's Eq. 5 reward, and against the clean RM (control).
    "GRPO": PolicyMethod("base", optimizer="grpo"),
    "GRPO-robust": PolicyMethod("+Adv", 0.1, 0.5, optimizer="grpo"),
    "GRPO-clean": PolicyMethod("clean", optimizer="grpo"),
    # Robust RM or robust reward (`mechanism_rows`): the +Adv RM with DiffRO's plain CE; RRPO's Eq. 5 reward on it
    # scaled by 1 / (1 + α); and RRPO's reward (ε = 0.1, no adversarial term) on each earlier row of the ablation.
    "DiffRO-Adv": PolicyMethod("+Adv"),
    "RRPO-norm": PolicyMethod("+Adv", 0.1, 0.5, normalize_reward=True),
    "RRPO-LS": PolicyMethod("+LS", 0.1),
    "RRPO-EAM": PolicyMethod("+EAM", 0.1),
}

#: The rows `mechanism_rows` adds (each where the study trains its RM) and what each separates.
MECHANISM_DESCRIPTIONS: dict[str, str] = {
    "DiffRO-Adv": "DiffRO's plain cross-entropy reward against RRPO's +Adv RM: the robust RM without the robust "
    "reward. RRPO − DiffRO-Adv is what Eq. 5's label smoothing and adversarial term add on that RM.",
    "RRPO-norm": "RRPO's Eq. 5 reward on the +Adv RM scaled by 1 / (1 + α) (the emotion reward's weight in "
    "`DiffROConfig.reward_weights`): the same gradient direction as RRPO at the size of one cross-entropy, so "
    "RRPO − RRPO-norm is the effect of the reward's scale alone (against the KL term). Table 1's reward column "
    "is the unscaled Eq. 5 reward, as for RRPO.",
    "RRPO-LS": "RRPO's reward with label smoothing ε = 0.1 (no adversarial term, α = 0) against the +LS RM.",
    "RRPO-EAM": "the same reward against the +EAM RM (label smoothing and Energy-Adaptive Mixup, no adversarial "
    "training).",
}

#: What the mechanism rows were predicted to do, written before their first run (the report prints it).
MECHANISM_PREDICTION = (
    "On an RM whose Eq. 5 reward gradient is nearly collinear with its cross-entropy gradient (measured on seed 0's "
    "+Adv RM: cosine 0.9999998 and 1.32 times its norm, the FGM radius being ~1% of the norm of h'), "
    "RRPO is DiffRO at an effective KL weight of about β / (1 + α): it moves further from the SFT policy per step, "
    "so it gains more emotion and loses more naturalness at matched steps and nothing at matched sqrt KL. "
    "RRPO-norm removes that scale: RRPO-norm ≈ DiffRO-Adv (paired differences near 0 at matched steps and at "
    "matched sqrt KL). Where the flaw is a shortcut in the RM's data (dataset-bias, paper-protocol), the "
    "regularisers do not remove it: RRPO-LS, RRPO-EAM and RRPO hack alike, and DiffRO-Adv − DiffRO is about "
    "the difference between their RMs' shortcuts, not that of their rewards."
)

#: Each GRPO row and the DiffRO-family row on the same reward it is compared with (paired, end and matched sqrt KL).
GRPO_COUNTERPARTS: dict[str, str] = {"GRPO": "DiffRO", "GRPO-robust": "RRPO", "GRPO-clean": "DiffRO-clean"}

#: What the GRPO rows were predicted to do, written before their first run (the report prints it).
GRPO_PREDICTION = (
    "GRPO's reward reads only the tokens the policy generates, drawn from the RAS nucleus, and its gradient raises "
    "the log-probability of whole completions that beat their group. The artifact ids that DiffRO's Gumbel sample "
    "reads in the tail (dataset-bias, paper-protocol) are drawn at a rate of ~0.003 per token, so GRPO rarely sees "
    "the shortcut pay and the group advantage of one rare artifact is drowned by the prosody of the rest of the "
    "utterance: at matched sqrt KL, GRPO - DiffRO has a lower artifact rate and higher naturalness (the sign of the "
    "DiffRO-nucleus row, larger), with emotion within its interval. At matched steps GRPO moves less far from the "
    "SFT policy (a noisier, sampled gradient at the same learning rate), so its end-of-run differences mostly "
    "reflect less optimisation. Where the hacking is intensity over-shoot that every RM rewards (brittle, "
    "cue-exaggeration), GRPO hacks the same way along the same curve: differences near 0 at matched sqrt KL. "
    "GRPO-robust - RRPO and GRPO-clean - DiffRO-clean follow GRPO - DiffRO. Cost: a GRPO step generates "
    "num_generations completions per prompt, so it costs several DiffRO steps, and more per unit of gold gained."
)

#: What the DiffRO-nucleus row was predicted to do, written before its first run (the report prints it).
SAMPLING_PREDICTION = (
    "Where DiffRO's hacking goes through artifact ids (dataset-bias, paper-protocol), those ids lie outside the SFT "
    "policy's nucleus at almost every position (it emits them at a rate of ~0.003), so DiffRO-nucleus's reward "
    "never reads them and its gradient never raises their logits: its artifact rate stays near SFT's and it loses "
    "less naturalness than DiffRO, at matched steps and at matched sqrt KL, while still gaining emotion through "
    "prosody. Where no RM pays for artifacts (brittle, cue-exaggeration) it behaves like DiffRO: paired "
    "differences near 0 at matched sqrt KL."
)

#: What the rows that change the reward's Gumbel sample read (the report prints the line of each row it runs).
SAMPLING_DESCRIPTIONS: dict[str, str] = {
    "DiffRO-nucleus": "DiffRO whose straight-through Gumbel sample is drawn from the rollout's nucleus (the "
    "top_k and top_p of the study's rollouts, renormalised; `DiffROConfig.gumbel_sampling='rollout'`) instead of the "
    "full softmax over the codebook: the RM scores tokens of the kind the policy emits when it generates, not tail "
    "tokens (artifact ids included) that generation rarely draws, and the gradient reaches only the nucleus's "
    "logits.",
}

#: The remedy rows beyond the paper's (`reward_remedies`) and what each optimises; the report prints them with
#: :data:`REMEDY_PREDICTION`.
REMEDY_DESCRIPTIONS: dict[str, str] = {
    "DiffRO+ASR": "DiffRO's emotion reward plus the ASR reward log P_CTC(text | tokens) per symbol of the multi-task "
    "RM (DiffRO's R_ASR).",
    "RRPO+ASR": "RRPO's Eq. 5 reward plus the same ASR reward.",
    "DiffRO+MTR": "DiffRO's multi-task reward: emotion, ASR and the quality head's log P(best MOS class).",
    "DiffRO-ens-mean": "the mean reward of an ensemble of base RMs that differ in training seed (Coste et al. 2023).",
    "DiffRO-ens-min": "the worst-case reward of that ensemble.",
    "DiffRO-ens-mean_minus_std": "mean - λ·std of that ensemble: the uncertainty-penalised reward.",
    "DiffRO-gated": "DiffRO whose emotion loss counts only for samples the multi-task RM's ASR head transcribes with "
    "CER <= gate_max_cer (the 'expressive gibberish' gate of expressive-TTS RL).",
}

#: The name of the starting (SFT) policy in `headline_pairs`.
HEADLINE_START = "SFT"

#: Table 1 columns: key in the evaluation metrics -> (header, higher is better).
TABLE1_COLUMNS: dict[str, tuple[str, bool]] = {
    "oracle_emotion_score": ("emotion score (E-MOS analogue, 1-5)", True),
    "oracle_naturalness": ("naturalness (N-MOS analogue, 1-5)", True),
    "oracle_cer": ("CER", False),
    "oracle_artifact_rate": ("artifact rate", False),
    "reward": ("reward of the method's own RM (-L_emo)", True),
    "rm_accuracy": ("RM accuracy", True),
}

#: Emotion intensities the study's oracle accepts as natural prosody: every strength from neutral to full.
STUDY_PLAUSIBLE_INTENSITIES: list[float] = [round(0.1 * i, 1) for i in range(11)]

#: Table 2 domains: the RM's training language, the same test utterances with artifacts, the other language.
TABLE2_DOMAINS = ("alpha", "alpha+artifacts", "beta")

#: Emotion intensities of the audit's target-emotion speech (its intensity response): none, the SFT corpus's, natural,
#: exaggerated.
AUDIT_INTENSITIES = (0.0, 0.5, 1.0, 1.5, 2.0)


def _field_overrides(value: dict[str, Any] | str | None, config_class: type, name: str) -> dict[str, Any]:
    """`value` (a dict, or JSON from the command line) checked to hold only fields of the dataclass `config_class`."""
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict | None):
        raise ValueError(f"{name} must map {config_class.__name__} fields to values, got {value!r}.")
    value = dict(value or {})
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"Unknown {name} fields {unknown}; {config_class.__name__} has {sorted(known)}.")
    return value


@dataclass
class RewardHackingStudyConfig:
    """Sizes and settings of the reward-hacking study.

    The defaults are the ``dataset-bias`` preset; :meth:`from_preset` starts from another preset
    (:mod:`rrpo_hf.study.presets`) and the example scripts' ``--preset`` does the same, with flags and recipe keys
    overriding the preset's values. The report lists every field that differs from the named preset.
    """

    output_dir: str = field(default="outputs/study", metadata={"help": "Where report.md, results.json and plots go."})
    preset: str = field(
        default="dataset-bias",
        metadata={
            "help": f"Named study this run is (one of {list(STUDY_PRESETS)}; the scripts also take "
            f"'{ALL_PRESETS}' or a comma-separated list of presets: one study each, into output_dir/<preset>). The "
            "scripts and `from_preset` take the preset's settings as defaults; the report prints its mechanism and "
            "prediction and every field that differs from it."
        },
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One full pipeline per seed."})
    resume: bool = field(
        default=False,
        metadata={
            "help": "Reuse the seeds a previous run of the same study saved in output_dir/seeds/ (each file holds "
            "the settings that produced it) and run only the others: a seed's numbers do not depend on the other "
            "seeds, so the study is the one an uninterrupted run gives. A saved seed of other settings is an error "
            "naming them. Default False: every seed runs (and its file is rewritten)."
        },
    )
    num_workers: int = field(
        default=1,
        metadata={
            "help": "Seeds run at once, each in a process of its own (default 1: one after the other, in this "
            "process; 0: one per CPU core, at most one per seed). A seed's results do not depend on the others', so "
            "every setting gives the same numbers."
        },
    )
    threads_per_seed: int = field(
        default=1,
        metadata={
            "help": "CPU threads each seed computes with (default 1). The thread count changes the order of floating "
            "point sums, so it is fixed here rather than taken from the machine: the same seed gives the same numbers "
            "everywhere. The toy models gain little from more threads; run seeds in parallel (num_workers) instead."
        },
    )
    codebook_size: int = field(default=512, metadata={"help": "Testbed speech codebook (= the toy models' vocab)."})
    num_train: int = field(default=1200, metadata={"help": "Training utterances of language alpha (SFT, RMs)."})
    num_test: int = field(default=300, metadata={"help": "Test utterances per domain (Table 2, probes)."})
    spurious_emotions: list[str] = field(
        default_factory=lambda: ["angry"], metadata={"help": "Emotions that co-occur with artifacts in the RM corpus."}
    )
    spurious_artifact_rate: float = field(
        default=1.0, metadata={"help": "P(artifacts | spurious emotion) in the RM training corpus."}
    )
    rm_num_speakers: int = field(
        default=4, metadata={"help": "Speakers of the RM training corpus (and the clean one)."}
    )
    rm_label_noise: float = field(
        default=0.0,
        metadata={
            "help": "Share of the RM training corpus's labels replaced by a wrong emotion (pseudo-labelling errors "
            "of a large corpus); the clean corpus keeps correct labels."
        },
    )
    rm_intensity: list[float] = field(
        default_factory=lambda: [1.0],
        metadata={
            "help": "Emotion intensity of the RM training and clean corpora: [s], or [low, high] drawn per utterance "
            "(graded emotion; see sft_intensity)."
        },
    )
    rm_num_train: int | None = field(
        default=None,
        metadata={
            "help": "Utterances of the RM training corpus (default None: num_train). A small corpus is one an RM "
            "can over-fit, learning chance correlations (the `chance-glitches` preset)."
        },
    )
    rm_finetune_num_train: int = field(
        default=0,
        metadata={
            "help": "Size of the small clean fine-tuning set of the paper's protocol (correct labels, no "
            "artifacts, full intensity, `rm_finetune_num_speakers` speakers, texts of its own). Above 0, the base "
            "RM is the pre-trained RM and the rows +FT, +LS, +EAM, +Adv fine-tune it on this set; 0: every row "
            "trains from scratch on the RM corpus."
        },
    )
    rm_finetune_num_speakers: int = field(default=1, metadata={"help": "Speakers of the fine-tuning set."})
    rm_finetune_epochs: float = field(default=4.0, metadata={"help": "Epochs of the RM fine-tune."})
    rm_finetune_learning_rate: float = field(default=5e-4, metadata={"help": "Learning rate of the RM fine-tune."})
    clean_artifact_rate: float = field(
        default=0.2,
        metadata={
            "help": "P(artifacts) of an utterance of *any* emotion in the clean control corpus (the `clean` RM): "
            "the glitches the SFT data has too, with no label correlation, so the clean RM learns that they "
            "carry no emotion. 0: no artifacts at all."
        },
    )
    artifact_density: float = field(
        default=0.15,
        metadata={
            "help": "Artifacts per token in a corrupted utterance (testbed world). The world's default 0.05 leaves "
            "the shortcut too faint for a policy to find within the study's budget."
        },
    )
    sft_artifact_rate: float = field(
        default=0.05,
        metadata={
            "help": "P(artifacts) of an SFT utterance of *any* emotion (no emotion correlation). A policy can only "
            "learn to emit glitches it can produce at all; real TTS LMs do produce some. 0: artifact-free SFT data."
        },
    )
    sft_num_train: int | None = field(
        default=4800,
        metadata={
            "help": "Utterances of the SFT corpus (default 4800; None: num_train, the same texts as the natural "
            "corpus). A larger corpus (drawn with the same seed, so with other texts) gives the policy more texts to "
            "generalise from: it then speaks the unseen test texts intelligibly (docs/testbed.md, 'A competent SFT "
            "policy')."
        },
    )
    sft_intensity: list[float] = field(
        default_factory=lambda: [0.5, 0.7],
        metadata={
            "help": "Emotion intensity of the SFT corpus: [s] for one value, [low, high] for a range drawn per "
            "utterance (testbed `make_emotion_corpus(intensity=)`). [1]: full-strength emotion, as the RM corpora; "
            "below 1: an under-expressive SFT corpus, which leaves the policy emotion headroom a reward can "
            "genuinely add."
        },
    )
    test_artifact_rate: float = field(
        default=0.1, metadata={"help": "Artifacts per token inserted into every test utterance of 'alpha+artifacts'."}
    )
    testbed: dict[str, Any] | str | None = field(
        default_factory=dict,
        metadata={
            "help": "Overrides of the testbed world's `TestbedConfig` fields (JSON on the command line), e.g. "
            '{"duration_jitter": 0.05, "seed": 3}; empty: the default world. `codebook_size` and `artifact_density` '
            "stay the study's own fields and always set those two world parameters (they also size the models and "
            "the shortcut); a different value here is an error. The world actually used is written to results.json "
            '("world") and the report, and can be passed back here to draw the same world again.'
        },
    )
    oracle: dict[str, Any] | str | None = field(
        default_factory=lambda: {"plausible_intensities": list(STUDY_PLAUSIBLE_INTENSITIES)},
        metadata={
            "help": "Overrides of the oracle's `OracleConfig` fields (JSON on the command line). Default: every "
            "intensity 0, 0.1, ..., 1 is plausible prosody, so that mildly expressive SFT speech is natural while "
            "the emotion score rewards intensity; {}: the testbed's default oracle (full strength only). Written to "
            'results.json ("oracle").'
        },
    )
    # --- SFT policy
    policy_hidden_size: int = field(default=64, metadata={"help": "Toy policy hidden size."})
    policy_num_layers: int = field(default=2, metadata={"help": "Toy policy decoder layers."})
    sft_epochs: float = field(
        default=8.0,
        metadata={
            "help": "SFT epochs over the SFT corpus (default 8 over its 4800 utterances). Measured on seeds 0 and 1 "
            "(angry test prompts, docs/testbed.md 'A competent SFT policy'): 30 epochs over 1200 utterances leave "
            "the toy policy at oracle CER 0.12-0.16 (it memorises its training texts); 8 over 4800, the same "
            "number of steps, reach CER 0.03-0.05."
        },
    )
    sft_learning_rate: float = field(default=3e-3, metadata={"help": "SFT learning rate (training from scratch)."})
    # --- reward models
    rm_variants: list[str] = field(
        default_factory=lambda: ["base", "+LS", "+EAM", "+Adv", "clean"],
        metadata={"help": f"Ablation rows to train, of {list(RM_VARIANTS)} (+FT needs rm_finetune_num_train > 0)."},
    )
    rm_hidden_size: int = field(default=64, metadata={"help": "Reward-model hidden size."})
    rm_num_layers: int = field(default=2, metadata={"help": "Reward-model encoder layers."})
    rm_epochs: float = field(default=4.0, metadata={"help": "Reward-model training epochs."})
    rm_learning_rate: float = field(default=1e-3, metadata={"help": "Reward-model learning rate (from scratch)."})
    adv_epsilon: float = field(
        default=0.5,
        metadata={
            "help": "L2 radius ε of the FGM perturbation of h' (Eq. 4) in +Adv training and in RRPO's reward (paper: "
            "0.5). The norm is per utterance over all frames; compare it with the probes' `hidden_norm`."
        },
    )
    adv_epsilon_scale: str = field(
        default="absolute",
        metadata={
            "help": "How adv_epsilon is read (`RobustRewardConfig.adv_epsilon_scale`): 'absolute' (default, the "
            "paper's: an L2 radius in the units of h') or 'relative' (adv_epsilon times the RMS frame norm of h', "
            "the scale rule; 1.0 recommended). The +Adv-0.5 row always uses absolute 0.5."
        },
    )
    mechanism_gate: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Thresholds of the mechanism gate (`rrpo_hf.study.gate.MechanismGate` fields; JSON on the "
            "command line). Given, the study first trains every seed's vanilla (base) RM and measures the gate on "
            "it alone; the robust RMs and the policies are built only if it passes, else the report says "
            "'mechanism absent'. Default None: no gate (the presets that set one say so)."
        },
    )
    # --- policy optimisation
    policy_methods: list[str] = field(
        default_factory=lambda: ["DiffRO", "RRPO", "DiffRO-clean"],
        metadata={"help": f"Table 1 rows to run, of {list(POLICY_METHODS)}."},
    )
    reward_remedies: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Rows of the other hacking remedies, added after the preset's policy_methods (default none): any "
            "of DiffRO+ASR, RRPO+ASR, DiffRO+MTR (emotion + ASR + quality rewards), DiffRO-ens-mean, DiffRO-ens-min, "
            "DiffRO-ens-mean_minus_std (ensembles of base RMs), DiffRO-gated (emotion loss gated on ASR CER). The "
            "ASR, quality and gate rows share one multi-task reward model trained once per study."
        },
    )
    mechanism_rows: bool = field(
        default=False,
        metadata={
            "help": "Add the rows that separate RRPO's robust RM from its robust reward, after the other rows, each "
            "where the study trains its RM (default False): DiffRO-Adv (plain CE on the +Adv RM), RRPO-norm "
            "(Eq. 5 on the +Adv RM scaled by 1/(1+α)), RRPO-LS and RRPO-EAM (RRPO's reward, ε = 0.1, on the +LS "
            "and +EAM RMs). Rows already in policy_methods or reward_remedies are not repeated."
        },
    )
    headline_pairs: list[str] = field(
        default_factory=lambda: ["RRPO − DiffRO", "DiffRO − SFT"],
        metadata={
            "help": "The paired comparisons the report leads with, 'A − B' or 'A-B' (A, B: Table 1 rows, or SFT, "
            "the starting policy; default RRPO − DiffRO and DiffRO − SFT): differences at the end and at matched "
            "sqrt KL, their paired SD, the minimum detectable effect at 80 percent power and the seeds needed to "
            "detect 0.2 naturalness. A name that is no row fails; a pair whose rows this run does not have is listed "
            "as not run."
        },
    )
    asr_reward_weight: float = field(
        default=1.0, metadata={"help": "Weight of the ASR reward in the +ASR and +MTR rows (emotion reward: 1)."}
    )
    quality_reward_weight: float = field(
        default=1.0, metadata={"help": "Weight of the quality reward in the +MTR row (emotion reward: 1)."}
    )
    ensemble_size: int = field(
        default=3,
        metadata={
            "help": "Emotion RMs of the ensemble rows: the base RM and ensemble_size - 1 retrained "
            "with other seeds on the same data."
        },
    )
    ensemble_std_coef: float = field(default=1.0, metadata={"help": "λ of the mean_minus_std ensemble row."})
    gate_max_cer: float = field(
        default=0.2,
        metadata={
            "help": "The gated row's intelligibility bar: the emotion loss of a sample counts when its ASR CER is "
            "at most this (default 0.2, the expressive-TTS papers' threshold)."
        },
    )
    multitask_rm_num_train: int = field(
        default=1200,
        metadata={
            "help": "Utterances (natural and degraded alpha speech, quality labels from the oracle) the "
            "multi-task RM (ASR + quality heads) trains on, with a corpus seed of its own."
        },
    )
    multitask_rm_epochs: float = field(
        default=24.0,
        metadata={
            "help": "Epochs of the multi-task RM (the CTC head needs ~150 steps to leave the all-blank "
            "plateau; 24 epochs of 1200 utterances reach test CER 0.10)."
        },
    )
    policy_target_emotions: list[str] | None = field(
        default_factory=lambda: ["angry"],
        metadata={
            "help": "Target emotions of the policy-optimisation prompts (None: all). The spurious emotion is where "
            "the vanilla RM's shortcut pays."
        },
    )
    beta_sweep: list[float] = field(
        default_factory=lambda: [0.0, 1.0],
        metadata={
            "help": "Control rows: DiffRO (base RM) once more at each of these KL weights β, named `DiffRO-beta<β>` "
            "(default 0 and 1, next to the main rows' `beta` 0.1): how much the KL term alone holds hacking back. "
            "Empty: none."
        },
    )
    rollout: str = field(default="online", metadata={"help": "DiffRO rollouts: 'online' (generated) or 'offline'."})
    policy_steps: int = field(default=60, metadata={"help": "DiffRO / RRPO optimisation steps."})
    policy_learning_rate: float = field(
        default=1e-5,
        metadata={
            "help": "DiffRO / RRPO learning rate. 1e-5 is the largest of {1e-3, 3e-4, 1e-4, 3e-5, 1e-5} at which "
            "DiffRO's hacking of the dataset-bias RM develops over tens of steps (naturalness still within 0.4 of "
            "SFT's at step 30, collapsed by step 60) instead of within 5 (docs/testbed.md, 'Optimisation strength')."
        },
    )
    beta: float = field(default=0.1, metadata={"help": "KL weight β of DiffRO / RRPO (papers: 0.1)."})
    grpo_num_generations: int = field(
        default=4,
        metadata={
            "help": "Completions per prompt of the GRPO rows (G, default 4); a GRPO step reads policy_batch_size "
            "prompts, as a DiffRO step, so it generates G times as many samples."
        },
    )
    grpo_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the GRPO rows (None: policy_learning_rate, the DiffRO rows')."},
    )
    policy_batch_size: int = field(default=16, metadata={"help": "Prompts per DiffRO step."})
    max_new_tokens: int = field(default=100, metadata={"help": "Cap on generated tokens per sample."})
    eval_steps: int = field(default=5, metadata={"help": "Evaluate the policy (generate + score) every N steps."})
    num_eval_prompts: int = field(default=48, metadata={"help": "Evaluation prompts (test texts, target emotions)."})
    # --- probes
    probe_artifact_rate: float = field(default=0.1, metadata={"help": "Artifacts per token in the sensitivity probe."})
    probe_exaggeration: float = field(
        default=2.0,
        metadata={
            "help": "Emotion intensity (> 1) of the exaggeration probe (default 2.0: accents on every phoneme of an "
            "accented emotion): the probe compares the RM's P(spurious emotion) on the alpha test utterances of that "
            "emotion rendered at this intensity and at 1. Positive `exaggeration_delta_p`: the RM pays for "
            "exaggerated prosody."
        },
    )
    probe_substitutions: int = field(default=3, metadata={"help": "Token substitutions k of the attack probe."})
    probe_epsilons: list[float] = field(
        default_factory=lambda: [0.5, 32.0],
        metadata={
            "help": "L2 radii of the embedding (h') attack, one probe each. 0.5 is the training epsilon of +Adv; on "
            "the toy RM the per-utterance norm of h' is ~50 (reported as `hidden_norm`), so 0.5 is a perturbation "
            "of ~1 percent and a radius of ~32 is where a base RM's accuracy starts to fall."
        },
    )
    probe_pgd_steps: int = field(default=5, metadata={"help": "PGD steps of the embedding attack (1 = FGM, Eq. 4)."})
    probe_num_utterances: int | None = field(
        default=120, metadata={"help": "Natural alpha test utterances the probes use (None: all)."}
    )
    audit_num_utterances: int = field(
        default=24,
        metadata={
            "help": "Target-emotion utterances of the exploitability audit of every RM row (rrpo_hf.audit, "
            "docs/audit.md), drawn from alpha test speech rendered at each of the audit's intensities (default 24 per "
            "intensity; the attacks run on 24 of them). 0: no audit."
        },
    )
    audit_edit_budget: int = field(default=4, metadata={"help": "Greedy token edits per utterance in the audit."})
    audit_gumbel_steps: int = field(
        default=30,
        metadata={
            "help": "Adam steps of the audit's Gumbel (DiffRO-path) attack (default 30: at lr 0.5 a position's most "
            "likely token can change only after ~9 steps); 0: skip it."
        },
    )
    target_check: str = field(
        default="flag",
        metadata={
            "help": "What a reward model that does not see the target emotion does to the run (the target check: "
            "its recall of each target emotion on the natural alpha test set and the audit's rise of P(target) "
            "from intensity 0 to 1, per seed). 'flag' (default): a WARNING line per failing seed and RM row, a FLAG "
            "in the report's target check table, and a ⚠ on every Table 1 / headline row optimised against it; "
            "'fail': raise before policy optimisation when an RM a policy row optimises against fails."
        },
    )
    target_check_min_recall: float = field(
        default=0.5,
        metadata={"help": "The target check's bar on each target emotion's recall (natural alpha test set)."},
    )
    target_check_min_rise: float = field(
        default=0.1,
        metadata={
            "help": "The target check's bar on the audit's intensity rise: P(target) at intensity 1 minus at 0 "
            "(not checked without the audit, audit_num_utterances = 0)."
        },
    )
    confidence: float = field(default=0.95, metadata={"help": "Confidence level of the intervals over seeds."})

    def __post_init__(self):
        preset_names(self.preset)  # a known name, a comma-separated list of them, or "all"
        unknown = sorted(set(self.rm_variants) - set(RM_VARIANTS))
        if unknown:
            raise ValueError(f"Unknown rm_variants {unknown}; choose from {list(RM_VARIANTS)}.")
        unknown = sorted(set(self.policy_methods) - set(POLICY_METHODS))
        if unknown:
            raise ValueError(f"Unknown policy_methods {unknown}; choose from {list(POLICY_METHODS)}.")
        unknown = sorted(set(self.reward_remedies) - set(REMEDY_DESCRIPTIONS))
        if unknown:
            raise ValueError(f"Unknown reward_remedies {unknown}; choose from {list(REMEDY_DESCRIPTIONS)}.")
        repeated = sorted(set(self.reward_remedies) & set(self.policy_methods))
        if repeated:
            raise ValueError(f"{repeated} are in both policy_methods and reward_remedies; list each row once.")
        if self.grpo_num_generations < 2:
            raise ValueError(f"grpo_num_generations must be >= 2, got {self.grpo_num_generations}.")
        if self.ensemble_size < 2:
            raise ValueError(f"ensemble_size must be >= 2 (an ensemble of one is DiffRO), got {self.ensemble_size}.")
        if self.ensemble_std_coef < 0 or self.asr_reward_weight < 0 or self.quality_reward_weight < 0:
            raise ValueError("ensemble_std_coef, asr_reward_weight and quality_reward_weight must be >= 0.")
        if not 0 <= self.gate_max_cer <= 1:
            raise ValueError(f"gate_max_cer must be in [0, 1], got {self.gate_max_cer}.")
        for method in [*self.policy_methods, *self.reward_remedies]:
            needed = POLICY_METHODS[method].rm_variant
            if needed not in self.rm_variants:
                raise ValueError(f"Policy method {method!r} needs the reward model {needed!r}; add it to rm_variants.")
        if self.rm_num_train is not None and self.rm_num_train < 1:
            raise ValueError(f"rm_num_train must be >= 1 (or None: num_train), got {self.rm_num_train}.")
        if self.adv_epsilon_scale not in ("absolute", "relative"):
            raise ValueError(f"adv_epsilon_scale must be 'absolute' or 'relative', got {self.adv_epsilon_scale!r}.")
        if isinstance(self.mechanism_gate, str):
            self.mechanism_gate = json.loads(self.mechanism_gate)
        if self.mechanism_gate is not None:
            if "base" not in self.rm_variants:
                raise ValueError("The mechanism gate is measured on the vanilla RM; add 'base' to rm_variants.")
            self.gate()  # unknown or invalid thresholds fail now
        if "+FT" in self.rm_variants and self.rm_finetune_num_train <= 0:
            raise ValueError(
                "The +FT reward model fine-tunes the pre-trained RM on the clean fine-tuning set; set "
                "rm_finetune_num_train > 0 (e.g. --preset paper-protocol) or drop +FT from rm_variants."
            )
        finetuned = [v for v in self.rm_variants if v in FINETUNED_VARIANTS]
        if self.rm_finetune_num_train > 0 and finetuned and "base" not in self.rm_variants:
            raise ValueError(f"rm_variants {finetuned} fine-tune the pre-trained base RM; add 'base' to rm_variants.")
        if (
            self.rm_finetune_num_train > 0
            and finetuned
            and self.rm_variants.index("base") > min(self.rm_variants.index(v) for v in finetuned)
        ):
            raise ValueError(f"List 'base' before {finetuned} in rm_variants: they fine-tune it, so it trains first.")
        for name in ("rm_label_noise", "clean_artifact_rate", "spurious_artifact_rate", "sft_artifact_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if min(self.rm_num_speakers, self.rm_finetune_num_speakers) < 1:
            raise ValueError("rm_num_speakers and rm_finetune_num_speakers must be >= 1.")
        if self.beta_sweep and "base" not in self.rm_variants:
            raise ValueError("beta_sweep runs DiffRO against the base RM; add 'base' to rm_variants.")
        if any(beta < 0 for beta in self.beta_sweep):
            raise ValueError(f"beta_sweep values must be >= 0, got {self.beta_sweep}.")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed.")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (0: one per CPU core), got {self.num_workers}.")
        if self.threads_per_seed < 1:
            raise ValueError(f"threads_per_seed must be >= 1, got {self.threads_per_seed}.")
        if self.rollout not in ("online", "offline"):
            raise ValueError(f"rollout must be 'online' or 'offline', got {self.rollout!r}.")
        if self.target_check not in ("flag", "fail"):
            raise ValueError(f"target_check must be 'flag' or 'fail', got {self.target_check!r}.")
        if not 0 <= self.target_check_min_recall <= 1 or not -1 <= self.target_check_min_rise <= 1:
            raise ValueError(
                "target_check_min_recall must be in [0, 1] and target_check_min_rise in [-1, 1] (a probability "
                f"difference), got {self.target_check_min_recall} and {self.target_check_min_rise}."
            )
        self.headline_pairs = [" − ".join(self.headline_pair(pair)) for pair in self.headline_pairs]
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}.")
        if self.probe_exaggeration <= 1:
            raise ValueError(f"probe_exaggeration must be an intensity > 1, got {self.probe_exaggeration}.")
        if self.policy_steps < 1 or self.eval_steps < 1:
            raise ValueError("policy_steps and eval_steps must be >= 1.")
        self.testbed = _field_overrides(self.testbed, TestbedConfig, "testbed")
        for name in ("codebook_size", "artifact_density"):
            if name in self.testbed and self.testbed[name] != getattr(self, name):
                raise ValueError(
                    f"testbed[{name!r}] = {self.testbed[name]!r} contradicts the study's {name} = "
                    f"{getattr(self, name)!r}; set it with the study's own field."
                )
        self.testbed_config()  # invalid world parameters fail now, not after minutes of training
        for name in ("sft_intensity", "rm_intensity"):
            if len(getattr(self, name)) not in (1, 2):
                raise ValueError(f"{name} takes [s] or [low, high], got {getattr(self, name)}.")
        self.oracle = _field_overrides(self.oracle, OracleConfig, "oracle")
        self.oracle_config()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> RewardHackingStudyConfig:
        """The study of preset ``name`` (:data:`~rrpo_hf.study.presets.STUDY_PRESETS`), ``overrides`` applied last."""
        return cls(**{**get_preset(name).settings, **overrides, "preset": name})

    def preset_deviations(self) -> dict[str, tuple[Any, Any]]:
        """Fields whose value differs from what the named preset sets: name -> (preset's value, this run's)."""
        if len(preset_names(self.preset)) != 1:
            return {}
        reference = type(self).from_preset(self.preset).to_dict()
        mine = self.to_dict()
        skip = {"output_dir", "seeds", "num_workers", "resume"}  # where, how often and how many at once, not what
        return {k: (reference[k], mine[k]) for k in mine if k not in skip and mine[k] != reference[k]}

    def testbed_config(self) -> TestbedConfig:
        """The world every seed is drawn in: `TestbedConfig` defaults, then `testbed`, then the study's own fields."""
        return TestbedConfig(
            **{**self.testbed, "codebook_size": self.codebook_size, "artifact_density": self.artifact_density}
        )

    def policy_rows(self) -> dict[str, tuple[str, float]]:
        """Table 1 rows in order: row name -> (policy method of :data:`POLICY_METHODS`, KL weight β)."""
        rows = {method: (method, self.beta) for method in [*self.policy_methods, *self.reward_remedies]}
        if self.mechanism_rows:
            for method in MECHANISM_DESCRIPTIONS:
                if method not in rows and POLICY_METHODS[method].rm_variant in self.rm_variants:
                    rows[method] = (method, self.beta)
        rows.update({f"DiffRO-beta{beta:g}": ("DiffRO", float(beta)) for beta in self.beta_sweep})
        return rows

    def gate(self) -> MechanismGate | None:
        """The preset's mechanism gate (None: no gate)."""
        return None if self.mechanism_gate is None else MechanismGate.from_dict(self.mechanism_gate)

    def headline_pair(self, pair: str) -> tuple[str, str]:
        """``(A, B)`` of a headline pair ``"A − B"`` or ``"A-B"``: A and B are policy rows or ``SFT``.

        Row names hold hyphens (``DiffRO-FT``), so a bare ``-`` is split where both sides are names.
        """
        names = {*POLICY_METHODS, *self.policy_rows(), HEADLINE_START}
        for separator in (" − ", " - ", "−"):
            if separator in pair:
                a, _, b = (part.strip() for part in pair.partition(separator))
                splits = [(a, b)]
                break
        else:
            splits = [(pair[:i].strip(), pair[i + 1 :].strip()) for i, c in enumerate(pair) if c == "-"]
        known = [(a, b) for a, b in splits if a in names and b in names]
        if len(known) != 1 or known[0][0] == known[0][1]:
            raise ValueError(
                f"headline_pairs entry {pair!r} must be 'A − B' with two different names of {sorted(names)} "
                "(SFT: the starting policy)."
            )
        return known[0]

    def oracle_config(self) -> OracleConfig:
        """The oracle every seed is scored by: `OracleConfig` defaults, then `oracle`."""
        return OracleConfig(**self.oracle)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def seed_settings(self) -> dict[str, Any]:
        """What decides one seed's numbers: every field but where results go, which and how many seeds run, at once
        or not (`seeds/seed<N>.json` stores it, so that `resume` reuses only a seed of the same study)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("output_dir", "seeds", "num_workers", "resume")}


def step_time_key(row: str) -> str:
    """The `timings_s` entry of a policy row's seconds in optimisation steps (evaluations left out): wall-clock, so
    kept with the other timings, out of the results that must repeat exactly."""
    return f"{row} (optimisation steps)"


def audit_target(cfg: RewardHackingStudyConfig) -> str:
    """The emotion the audit attacks for: the policy's (first) target emotion, else the (first) spurious one."""
    return normalize_emotion((cfg.policy_target_emotions or cfg.spurious_emotions)[0])


__all__ = [
    "AUDIT_INTENSITIES",
    "CLEAN_CORPUS_VARIANTS",
    "FINETUNED_VARIANTS",
    "GRPO_COUNTERPARTS",
    "GRPO_PREDICTION",
    "HEADLINE_START",
    "MECHANISM_DESCRIPTIONS",
    "MECHANISM_PREDICTION",
    "POLICY_METHODS",
    "REMEDY_DESCRIPTIONS",
    "REMEDY_PREDICTION",
    "RM_VARIANTS",
    "PolicyMethod",
    "SAMPLING_DESCRIPTIONS",
    "SAMPLING_PREDICTION",
    "STUDY_PLAUSIBLE_INTENSITIES",
    "TABLE1_COLUMNS",
    "TABLE2_DOMAINS",
    "RewardHackingStudyConfig",
    "audit_target",
    "step_time_key",
]
