"""Reward-hacking study on the testbed: SFT -> reward models (ablation rows) -> DiffRO vs RRPO, with the oracle as judge.

The study reproduces the *shape* of the RRPO paper's Tables 1 and 2 on the synthetic testbed
(:mod:`rrpo_hf.testbed`), where the listener is replaced by a ground-truth oracle:

1. a tiny CosyVoice2-architecture policy is SFT'd on natural speech of language ``alpha`` (the "+SFT" row);
2. reward models are trained on a corpus in which the spurious emotion(s) (``angry``) co-occur with artifact
   tokens: ``base`` (the vanilla DiffRO RM), ``+LS``, ``+EAM``, ``+Adv`` (RRPO's full RM);
3. Table 2 analogue: WA / UA of every RM in-domain (``alpha``), on ``alpha`` with artifacts inserted into every
   utterance, and cross-lingually (``beta``);
4. robustness probes of every RM (:mod:`rrpo_hf.evaluation.robustness`);
5. Table 1 analogue: DiffRO with the base RM vs RRPO with the robust RM, scored by the oracle (emotion score =
   E-MOS analogue, naturalness = N-MOS analogue, CER, artifact rate) and by the RM itself, mean ± 95% CI over seeds;
   a control runs DiffRO against a vanilla RM trained without the shortcut ("DiffRO-clean"), which separates
   exploitation of the shortcut from damage the emotion reward does anyway;
6. curves of RM reward vs oracle naturalness over policy training (reward up while naturalness goes down is the
   signature of reward hacking).

Everything here is measured; nothing is fixed in advance. :func:`run_study` returns (and writes) all figures.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.saving import atomic_write, atomic_write_text

#: Reward-model ablation rows of the paper's Table 2 (cumulative, each one flag away from the previous one).
RM_VARIANTS: dict[str, dict[str, Any]] = {
    "base": dict(label_smoothing=0.0, use_eam=False, adv_alpha=0.0),
    "+LS": dict(label_smoothing=0.1, use_eam=False, adv_alpha=0.0),
    "+EAM": dict(label_smoothing=0.1, use_eam=True, adv_alpha=0.0),
    "+Adv": dict(label_smoothing=0.1, use_eam=True, adv_alpha=0.5),
    # Control, not a paper row: the vanilla RM trained on the artifact-free corpus (no shortcut to learn).
    "clean": dict(label_smoothing=0.0, use_eam=False, adv_alpha=0.0),
}

#: Reward-model variants trained on the artifact-free corpus instead of the spurious one.
CLEAN_CORPUS_VARIANTS = frozenset({"clean"})

#: Policy-optimisation rows of the paper's Table 1: (reward-model variant, reward label smoothing ε of Eq. 2,
#: reward adversarial weight α of Eq. 5). DiffRO's reward is the plain cross-entropy of a vanilla RM; RRPO's is Eq. 5.
POLICY_METHODS: dict[str, tuple[str, float, float]] = {
    "DiffRO": ("base", 0.0, 0.0),
    "RRPO": ("+Adv", 0.1, 0.5),
    # Control: DiffRO against the RM without the shortcut. Artifacts that appear under DiffRO but not here are
    # exploitation of the shortcut; damage that appears here too is not caused by it.
    "DiffRO-clean": ("clean", 0.0, 0.0),
}

#: Table 1 columns: key in the evaluation metrics -> (header, higher is better).
TABLE1_COLUMNS: dict[str, tuple[str, bool]] = {
    "oracle_emotion_score": ("emotion score (E-MOS analogue, 1-5)", True),
    "oracle_naturalness": ("naturalness (N-MOS analogue, 1-5)", True),
    "oracle_cer": ("CER", False),
    "oracle_artifact_rate": ("artifact rate", False),
    "reward": ("reward of the method's own RM (-L_emo)", True),
    "rm_accuracy": ("RM accuracy", True),
}

#: Table 2 domains: the RM's training language, the same test utterances with artifacts, the other language.
TABLE2_DOMAINS = ("alpha", "alpha+artifacts", "beta")


@dataclass
class RewardHackingStudyConfig:
    """Sizes and settings of the reward-hacking study (defaults: the full CPU run; `recipes/toy/study.yaml`)."""

    output_dir: str = field(default="outputs/study", metadata={"help": "Where report.md, results.json and plots go."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One full pipeline per seed."})
    codebook_size: int = field(default=512, metadata={"help": "Testbed speech codebook (= the toy models' vocab)."})
    num_train: int = field(default=1200, metadata={"help": "Training utterances of language alpha (SFT, RMs)."})
    num_test: int = field(default=300, metadata={"help": "Test utterances per domain (Table 2, probes)."})
    spurious_emotions: list[str] = field(
        default_factory=lambda: ["angry"], metadata={"help": "Emotions that co-occur with artifacts in the RM corpus."}
    )
    spurious_artifact_rate: float = field(
        default=1.0, metadata={"help": "P(artifacts | spurious emotion) in the RM training corpus."}
    )
    artifact_density: float = field(
        default=0.15,
        metadata={
            "help": "Artifacts per token in a corrupted utterance (testbed world). The world's default 0.05 leaves "
            "the shortcut too faint for a policy to find within the study's budget."
        },
    )
    sft_artifact_rate: float = field(
        default=0.2,
        metadata={
            "help": "P(artifacts) of an SFT utterance of *any* emotion (no emotion correlation). A policy can only "
            "learn to emit glitches it can produce at all; real TTS LMs do produce some. 0: artifact-free SFT data."
        },
    )
    test_artifact_rate: float = field(
        default=0.1, metadata={"help": "Artifacts per token inserted into every test utterance of 'alpha+artifacts'."}
    )
    # --- SFT policy
    policy_hidden_size: int = field(default=64, metadata={"help": "Toy policy hidden size."})
    policy_num_layers: int = field(default=2, metadata={"help": "Toy policy decoder layers."})
    sft_epochs: float = field(default=5.0, metadata={"help": "SFT epochs over the natural alpha corpus."})
    sft_learning_rate: float = field(default=3e-3, metadata={"help": "SFT learning rate (training from scratch)."})
    # --- reward models
    rm_variants: list[str] = field(
        default_factory=lambda: list(RM_VARIANTS), metadata={"help": f"Ablation rows to train, of {list(RM_VARIANTS)}."}
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
    # --- policy optimisation
    policy_methods: list[str] = field(
        default_factory=lambda: list(POLICY_METHODS), metadata={"help": f"Table 1 rows to run, of {list(POLICY_METHODS)}."}
    )
    policy_target_emotions: list[str] | None = field(
        default_factory=lambda: ["angry"],
        metadata={
            "help": "Target emotions of the policy-optimisation prompts (None: all). The spurious emotion is where "
            "the vanilla RM's shortcut pays."
        },
    )
    rollout: str = field(default="online", metadata={"help": "DiffRO rollouts: 'online' (generated) or 'offline'."})
    policy_steps: int = field(default=60, metadata={"help": "DiffRO / RRPO optimisation steps."})
    policy_learning_rate: float = field(
        default=1e-3, metadata={"help": "DiffRO / RRPO learning rate (the toy policy is small and trained from scratch)."}
    )
    beta: float = field(default=0.1, metadata={"help": "KL weight β of DiffRO / RRPO (papers: 0.1)."})
    policy_batch_size: int = field(default=16, metadata={"help": "Prompts per DiffRO step."})
    max_new_tokens: int = field(default=100, metadata={"help": "Cap on generated tokens per sample."})
    eval_steps: int = field(default=10, metadata={"help": "Evaluate the policy (generate + score) every N steps."})
    num_eval_prompts: int = field(default=48, metadata={"help": "Evaluation prompts (test texts, target emotions)."})
    # --- probes
    probe_artifact_rate: float = field(default=0.1, metadata={"help": "Artifacts per token in the sensitivity probe."})
    probe_substitutions: int = field(default=3, metadata={"help": "Token substitutions k of the attack probe."})
    probe_epsilons: list[float] = field(
        default_factory=lambda: [0.5, 32.0],
        metadata={
            "help": "L2 radii of the embedding (h') attack, one probe each. 0.5 is the training epsilon of +Adv; on the "
            "toy RM the per-utterance norm of h' is ~50 (reported as `hidden_norm`), so 0.5 is a ~1% perturbation "
            "and a radius of ~32 is where a base RM's accuracy starts to fall."
        },
    )
    probe_pgd_steps: int = field(default=5, metadata={"help": "PGD steps of the embedding attack (1 = FGM, Eq. 4)."})
    probe_num_utterances: int | None = field(
        default=120, metadata={"help": "Natural alpha test utterances the probes use (None: all)."}
    )
    confidence: float = field(default=0.95, metadata={"help": "Confidence level of the intervals over seeds."})

    def __post_init__(self):
        unknown = sorted(set(self.rm_variants) - set(RM_VARIANTS))
        if unknown:
            raise ValueError(f"Unknown rm_variants {unknown}; choose from {list(RM_VARIANTS)}.")
        unknown = sorted(set(self.policy_methods) - set(POLICY_METHODS))
        if unknown:
            raise ValueError(f"Unknown policy_methods {unknown}; choose from {list(POLICY_METHODS)}.")
        for method in self.policy_methods:
            needed = POLICY_METHODS[method][0]
            if needed not in self.rm_variants:
                raise ValueError(f"Policy method {method!r} needs the reward model {needed!r}; add it to rm_variants.")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed.")
        if self.rollout not in ("online", "offline"):
            raise ValueError(f"rollout must be 'online' or 'offline', got {self.rollout!r}.")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}.")
        if self.policy_steps < 1 or self.eval_steps < 1:
            raise ValueError("policy_steps and eval_steps must be >= 1.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- statistics


def mean_confidence_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the two-sided Student-t confidence interval of the mean.

    With fewer than two finite values the half-width is ``nan`` (an interval needs a spread estimate).
    """
    from scipy import stats

    array = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    mean = float(array.mean())
    if array.size < 2:
        return mean, float("nan")
    sem = float(array.std(ddof=1) / math.sqrt(array.size))
    return mean, float(stats.t.ppf(0.5 + confidence / 2, df=array.size - 1) * sem)


def format_mean_ci(mean: float, half_width: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(half_width):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half_width:.{digits}f}"


# ---------------------------------------------------------------------------------------------- pipeline stages


def _quiet_training_kwargs(output_dir: str, seed: int) -> dict[str, Any]:
    return dict(
        output_dir=output_dir,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        logging_steps=10,
    )


def _print_flushed(message: str) -> None:
    print(message, flush=True)  # stage lines must interleave with the (stderr) progress bars when piped to a file


def _silenced(trainer):
    """Drop the per-log console printer: the study logs its stages and collects every metric from the log history."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def train_sft_policy(cfg: RewardHackingStudyConfig, train_dataset, world, seed: int, output_dir: str):
    """The "+SFT" policy: a tiny CosyVoice2LM trained from scratch on `train_dataset` (testbed speech whose rare
    artifacts, if any, are independent of the emotion: see `sft_artifact_rate`)."""
    from transformers import Trainer, TrainingArguments

    from ..data.speech_lm_collator import DataCollatorForCosyVoice2
    from ..models.cosyvoice2 import CosyVoice2LM, tiny_cosyvoice2_config
    from ..testbed import build_testbed_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_testbed_tokenizer(world)
    config = tiny_cosyvoice2_config(
        tokenizer, cfg.codebook_size, hidden_size=cfg.policy_hidden_size, num_hidden_layers=cfg.policy_num_layers
    )
    model = CosyVoice2LM(config)
    collator = DataCollatorForCosyVoice2(
        tokenizer, speech_token_size=cfg.codebook_size, emotion_names=train_dataset.features["emotion"]
    )
    args = TrainingArguments(
        **_quiet_training_kwargs(output_dir, seed),
        learning_rate=cfg.sft_learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.01,
        num_train_epochs=cfg.sft_epochs,
        per_device_train_batch_size=32,
        remove_unused_columns=False,
    )
    trainer = _silenced(Trainer(model=model, args=args, train_dataset=train_dataset, data_collator=collator))
    result = trainer.train()
    return model, tokenizer, {"train_loss": float(result.training_loss)}


def train_reward_model(cfg: RewardHackingStudyConfig, variant: str, train_dataset, domains, seed: int, output_dir: str):
    """One ablation row: a RobustSER reward model trained on the spurious corpus, scored (WA/UA) on every domain."""
    from ..data.labels import CANONICAL_EMOTIONS, emotion_label_maps
    from ..models.robust_ser import RobustSERConfig
    from ..trainers import RobustRewardConfig, RobustRewardTrainer

    id2label, label2id = emotion_label_maps(CANONICAL_EMOTIONS)
    hidden = cfg.rm_hidden_size
    config = RobustSERConfig(
        vocab_size=cfg.codebook_size,
        hidden_size=hidden,
        num_hidden_layers=cfg.rm_num_layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
        id2label=id2label,
        label2id=label2id,
    )
    args = RobustRewardConfig(
        **_quiet_training_kwargs(output_dir, seed),
        learning_rate=cfg.rm_learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        num_train_epochs=cfg.rm_epochs,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        adv_epsilon=cfg.adv_epsilon,
        **RM_VARIANTS[variant],
    )
    trainer = _silenced(
        RobustRewardTrainer(model=config, args=args, train_dataset=train_dataset, eval_dataset=dict(domains))
    )
    trainer.train()
    trainer.evaluate()
    model = trainer.model.eval()
    return model, {domain: dict(scores) for domain, scores in trainer.eval_results.items()}


def run_probes(cfg: RewardHackingStudyConfig, reward_model, domains, world, seed: int) -> dict[str, float]:
    """Direct robustness probes of one reward model (:mod:`rrpo_hf.evaluation.robustness`) on natural alpha speech.

    Keys: ``artifact_delta_p`` / ``artifact_flip_rate`` (rise of P(spurious emotion) and fraction of other-emotion
    utterances flipped to it when artifacts are inserted), ``substitution_attack_success`` (fraction of correctly
    classified utterances flipped by ``probe_substitutions`` gradient-chosen token swaps) and
    ``embedding_attack_accuracy@<eps>`` / ``embedding_attack_drop@<eps>`` (accuracy under a PGD attack of L2 size
    eps on h', for each of ``probe_epsilons``) and ``hidden_norm`` (mean per-utterance L2 norm of h', the scale the
    radii should be read against).
    """
    from . import robustness
    from ..testbed import insert_artifacts

    natural = domains["alpha"]
    if cfg.probe_num_utterances is not None:
        natural = natural.select(range(min(cfg.probe_num_utterances, len(natural))))
    tokens, emotions = natural["speech_tokens"], natural["emotion"]
    probes: dict[str, float] = {}
    for target in cfg.spurious_emotions:
        suffix = "" if len(cfg.spurious_emotions) == 1 else f"[{target}]"
        sensitivity = robustness.artifact_sensitivity(
            reward_model,
            tokens,
            emotions,
            target_emotion=target,
            rate=cfg.probe_artifact_rate,
            seed=seed,
            insert_fn=lambda batch, rate, s: insert_artifacts(batch, rate, world, s),
            show_progress=False,
        )
        probes[f"artifact_delta_p{suffix}"] = sensitivity["mean_delta"]
        probes[f"artifact_flip_rate{suffix}"] = sensitivity["flip_rate"]
    attack = robustness.token_substitution_attack(
        reward_model, tokens, emotions, max_substitutions=cfg.probe_substitutions, show_progress=False
    )
    probes["substitution_attack_success"] = attack["attack_success_rate"]
    for epsilon in cfg.probe_epsilons:
        embedding = robustness.embedding_attack_accuracy(
            reward_model, tokens, emotions, epsilon=epsilon, steps=cfg.probe_pgd_steps, show_progress=False
        )
        probes[f"embedding_attack_accuracy@{epsilon:g}"] = embedding["attacked_accuracy"]
        probes[f"embedding_attack_drop@{epsilon:g}"] = embedding["accuracy_drop"]
        probes["hidden_norm"] = embedding["mean_hidden_norm"]
    return probes


def policy_prompts(dataset, target_emotions: Sequence[str] | None, limit: int | None = None):
    """Prompt rows (text + target emotion) whose target is one of ``target_emotions`` (all when None)."""
    from ..data.labels import normalize_emotion

    if target_emotions is not None:
        names = dataset.features["emotion"].names
        wanted = {normalize_emotion(e) for e in target_emotions}
        dataset = dataset.filter(lambda row: names[row["emotion"]] in wanted)
    if len(dataset) == 0:
        raise ValueError(f"No prompt has a target emotion in {target_emotions}.")
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset


def optimize_policy(
    cfg: RewardHackingStudyConfig,
    method: str,
    sft_policy,
    tokenizer,
    reward_model,
    train_prompts,
    eval_prompts,
    oracle,
    seed: int,
    output_dir: str,
) -> dict[str, Any]:
    """Optimise a copy of the SFT policy with one of :data:`POLICY_METHODS` against `reward_model`.

    Returns ``curve`` (evaluation points: step 0 = the SFT policy, then every ``eval_steps``), ``train_log``
    (training reward and KL per logging window), ``start`` and ``final`` (first and last curve points).
    """
    import copy

    from ..trainers import DiffROConfig, DiffROTrainer

    _, label_smoothing, adv_alpha = POLICY_METHODS[method]
    args = DiffROConfig(
        **{**_quiet_training_kwargs(output_dir, seed), "logging_steps": cfg.eval_steps},
        rollout=cfg.rollout,
        beta=cfg.beta,
        reward_label_smoothing=label_smoothing,
        reward_adv_epsilon=cfg.adv_epsilon,
        reward_adv_alpha=adv_alpha,
        learning_rate=cfg.policy_learning_rate,
        lr_scheduler_type="constant",
        max_steps=cfg.policy_steps,
        per_device_train_batch_size=cfg.policy_batch_size,
        per_device_eval_batch_size=64,
        max_new_tokens=cfg.max_new_tokens,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        eval_seed=seed + 1234,
    )
    trainer = DiffROTrainer(
        model=copy.deepcopy(sft_policy),
        reward_model=reward_model,
        args=args,
        train_dataset=train_prompts,
        eval_dataset=eval_prompts,
        processing_class=tokenizer,
        oracle=oracle,
    )
    _silenced(trainer)
    # Step 0 = the SFT policy under this method's RM; train() starts a fresh log history, so keep it aside.
    start = {"step": 0, **{k.removeprefix("eval_"): float(v) for k, v in trainer.evaluate().items()}}
    trainer.train()
    curve = [start] + [
        {"step": int(entry["step"]), **{k.removeprefix("eval_"): float(v) for k, v in entry.items() if k.startswith("eval_")}}
        for entry in trainer.state.log_history
        if "eval_reward" in entry
    ]
    for point in curve:
        point.pop("runtime", None)
        point.pop("samples", None)
    train_log = [
        {"step": int(entry["step"]), "reward": float(entry["reward"]), "kl": float(entry.get("kl", float("nan")))}
        for entry in trainer.state.log_history
        if "reward" in entry and "loss" in entry
    ]
    return {"curve": curve, "train_log": train_log, "start": curve[0], "final": curve[-1]}


def run_seed(cfg: RewardHackingStudyConfig, seed: int, workdir: str, log: Callable[[str], None] | None = None) -> dict:
    """The whole pipeline for one seed; ``log`` gets one line per stage (default: print, flushed)."""
    log = log or _print_flushed
    from ..data.labels import CANONICAL_EMOTIONS
    from ..testbed import EmotionWorld, Oracle, TestbedConfig, insert_artifacts, make_emotion_corpus

    timings: dict[str, float] = {}
    world = EmotionWorld(TestbedConfig(codebook_size=cfg.codebook_size, artifact_density=cfg.artifact_density))
    oracle = Oracle(world)
    natural = make_emotion_corpus("alpha", cfg.num_train, cfg.num_test, world=world, seed=seed)
    # Same texts and renderings as `natural` (same seed); only the train split gets emotion-independent artifacts.
    sft_corpus = make_emotion_corpus(
        "alpha",
        cfg.num_train,
        0,
        world=world,
        seed=seed,
        spurious_artifact_rate=cfg.sft_artifact_rate,
        spurious_emotions=tuple(CANONICAL_EMOTIONS),
    )
    spurious = make_emotion_corpus(
        "alpha",
        cfg.num_train,
        cfg.num_test,
        world=world,
        seed=seed,
        spurious_artifact_rate=cfg.spurious_artifact_rate,
        spurious_emotions=tuple(cfg.spurious_emotions),
    )
    beta = make_emotion_corpus("beta", 0, cfg.num_test, world=world, seed=seed)["test"]
    test = natural["test"]
    corrupted = insert_artifacts(test["speech_tokens"], cfg.test_artifact_rate, world, seed=seed)
    with_artifacts = test.remove_columns("speech_tokens").add_column("speech_tokens", corrupted).cast(test.features)
    domains = {"alpha": test, "alpha+artifacts": with_artifacts, "beta": beta}

    start = time.perf_counter()
    log(f"[seed {seed}] SFT policy")
    sft_policy, tokenizer, sft_metrics = train_sft_policy(cfg, sft_corpus["train"], world, seed, f"{workdir}/sft")
    timings["sft"] = time.perf_counter() - start

    reward_models, table2, probes = {}, {}, {}
    for variant in cfg.rm_variants:
        start = time.perf_counter()
        log(f"[seed {seed}] reward model {variant}")
        corpus = natural["train"] if variant in CLEAN_CORPUS_VARIANTS else spurious["train"]
        reward_models[variant], table2[variant] = train_reward_model(
            cfg, variant, corpus, domains, seed, f"{workdir}/rm_{variant}"
        )
        probes[variant] = run_probes(cfg, reward_models[variant], domains, world, seed)
        timings[f"rm {variant}"] = time.perf_counter() - start

    train_prompts = policy_prompts(natural["train"], cfg.policy_target_emotions)
    eval_prompts = policy_prompts(test, cfg.policy_target_emotions, cfg.num_eval_prompts)
    policies = {}
    for method in cfg.policy_methods:
        start = time.perf_counter()
        log(f"[seed {seed}] {method} policy optimisation")
        rm_variant = POLICY_METHODS[method][0]
        policies[method] = optimize_policy(
            cfg,
            method,
            sft_policy,
            tokenizer,
            reward_models[rm_variant],
            train_prompts,
            eval_prompts,
            oracle,
            seed,
            f"{workdir}/{method}",
        )
        timings[method] = time.perf_counter() - start
    return {
        "seed": seed,
        "sft": sft_metrics,
        "table2": table2,
        "probes": probes,
        "policies": policies,
        "timings_s": timings,
    }


# ---------------------------------------------------------------------------------------------- aggregation


def aggregate(cfg: RewardHackingStudyConfig, per_seed: list[dict]) -> dict[str, Any]:
    """Mean ± CI over seeds of Table 1, Table 2 and the probes."""

    def ci(values):
        mean, half = mean_confidence_interval(values, cfg.confidence)
        return {"mean": mean, "ci": half, "n": len(values)}

    table1: dict[str, dict[str, dict]] = {}
    # "+SFT" row: the starting policy, scored by the base RM (the reward column) and the oracle.
    sft_rows = {m: [run["policies"][m]["start"] for run in per_seed] for m in cfg.policy_methods}
    first = cfg.policy_methods[0]
    table1["+SFT"] = {key: ci([row[key] for row in sft_rows[first]]) for key in TABLE1_COLUMNS}
    for method in cfg.policy_methods:
        table1[f"+{method}"] = {key: ci([run["policies"][method]["final"][key] for run in per_seed]) for key in TABLE1_COLUMNS}
        table1[f"+{method}"]["reward_gain"] = ci(
            [run["policies"][method]["final"]["reward"] - run["policies"][method]["start"]["reward"] for run in per_seed]
        )
    table2 = {
        variant: {
            domain: {metric: ci([100 * run["table2"][variant][domain][metric] for run in per_seed]) for metric in ("wa", "ua")}
            for domain in TABLE2_DOMAINS
        }
        for variant in cfg.rm_variants
    }
    probes = {}
    for variant in cfg.rm_variants:
        keys = sorted(set().union(*(run["probes"].get(variant, {}).keys() for run in per_seed)))
        probes[variant] = {key: ci([run["probes"][variant][key] for run in per_seed if key in run["probes"][variant]]) for key in keys}
    return {"table1": table1, "table2": table2, "probes": probes}


# ---------------------------------------------------------------------------------------------- report and plots


def format_table1(summary: dict) -> str:
    headers = [TABLE1_COLUMNS[key][0] for key in TABLE1_COLUMNS]
    lines = ["| method | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
    for row, scores in summary["table1"].items():
        cells = [format_mean_ci(scores[key]["mean"], scores[key]["ci"]) for key in TABLE1_COLUMNS]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table2(summary: dict) -> str:
    header = "| reward model | " + " | ".join(f"{d} WA (%) | {d} UA (%)" for d in TABLE2_DOMAINS) + " |"
    lines = [header, "|---|" + "---:|" * (2 * len(TABLE2_DOMAINS))]
    for variant, domains in summary["table2"].items():
        cells = []
        for domain in TABLE2_DOMAINS:
            cells += [format_mean_ci(domains[domain][m]["mean"], domains[domain][m]["ci"], 1) for m in ("wa", "ua")]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_probe_table(summary: dict) -> str:
    keys = sorted(set().union(*(scores.keys() for scores in summary["probes"].values())))
    if not keys:
        return "(robustness probes unavailable: `rrpo_hf.evaluation.robustness` is not installed)"
    lines = ["| reward model | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for variant, scores in summary["probes"].items():
        cells = [format_mean_ci(scores[k]["mean"], scores[k]["ci"]) if k in scores else "n/a" for k in keys]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_changes(summary: dict) -> str:
    """Per method: final − SFT of the oracle scores and the reward (the hacking signature in one line each)."""
    sft = summary["table1"]["+SFT"]
    keys = ("reward_gain", "oracle_naturalness", "oracle_emotion_score", "oracle_artifact_rate", "oracle_cer")
    lines = [
        "| method | Δ own-RM reward | Δ naturalness | Δ emotion score | Δ artifact rate | Δ CER |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row, scores in summary["table1"].items():
        if row == "+SFT":
            continue
        cells = [f"{scores['reward_gain']['mean']:+.3f}"]
        cells += [f"{scores[key]['mean'] - sft[key]['mean']:+.3f}" for key in keys[1:]]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(per_seed: list[dict], methods: Sequence[str], output_dir: str | os.PathLike) -> list[str]:
    """One PNG per method, one line per seed, over policy-optimisation steps.

    Top: the method's RM reward (left axis, solid) and the oracle naturalness (right axis, dashed): reward up while
    naturalness goes down is reward hacking. Bottom: what the policy changed, oracle artifact rate and CER.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One scale per quantity across the methods' figures, so that they can be compared side by side.
    def value_range(key):
        values = [p[key] for run in per_seed for m in methods for p in run["policies"][m]["curve"]]
        low, high = min(values), max(values)
        pad = 0.05 * (high - low) or 0.05
        return low - pad, high + pad

    limits = {key: value_range(key) for key in ("reward", "oracle_naturalness", "oracle_artifact_rate", "oracle_cer")}
    paths = []
    for method in methods:
        fig, (reward_axis, damage_axis) = plt.subplots(2, 1, figsize=(6.4, 6.0), sharex=True)
        natural_axis = reward_axis.twinx()
        cer_axis = damage_axis.twinx()
        for run in per_seed:
            curve = run["policies"][method]["curve"]
            steps = [point["step"] for point in curve]
            reward_axis.plot(steps, [p["reward"] for p in curve], "-o", color="tab:red", alpha=0.7, ms=3)
            natural_axis.plot(steps, [p["oracle_naturalness"] for p in curve], "--s", color="tab:blue", alpha=0.7, ms=3)
            damage_axis.plot(steps, [p["oracle_artifact_rate"] for p in curve], "-o", color="tab:purple", alpha=0.7, ms=3)
            cer_axis.plot(steps, [p["oracle_cer"] for p in curve], "--s", color="tab:green", alpha=0.7, ms=3)
        for axis, key in ((reward_axis, "reward"), (natural_axis, "oracle_naturalness"),
                          (damage_axis, "oracle_artifact_rate"), (cer_axis, "oracle_cer")):
            axis.set_ylim(*limits[key])
        reward_axis.set_ylabel("RM reward (solid)", color="tab:red")
        natural_axis.set_ylabel("oracle naturalness (dashed)", color="tab:blue")
        damage_axis.set_ylabel("artifact rate (solid)", color="tab:purple")
        cer_axis.set_ylabel("CER (dashed)", color="tab:green")
        damage_axis.set_xlabel("policy optimisation step")
        reward_axis.set_title(f"{method}: reward vs oracle over training ({len(per_seed)} seed(s))")
        fig.tight_layout()
        path = Path(output_dir) / f"curve_{method.lower()}.png"
        _atomic_savefig(fig, path)
        plt.close(fig)
        paths.append(str(path))
    return paths


def _atomic_savefig(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def _atomic_write(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def render_report(cfg: RewardHackingStudyConfig, summary: dict, plots: Sequence[str], wall_time_s: float) -> str:
    seeds = len(cfg.seeds)
    ci_note = f"mean ± {cfg.confidence:.0%} CI (t-distribution) over {seeds} seeds" if seeds > 1 else "1 seed (no CI)"
    parts = [
        "# Reward-hacking study (testbed)",
        "",
        f"Seeds: {cfg.seeds}; {ci_note}. Wall time: {wall_time_s:.0f} s. Spurious shortcut in the RM corpus: "
        f"{cfg.spurious_artifact_rate:.0%} of {', '.join(cfg.spurious_emotions)} utterances carry artifact tokens "
        f"(density {cfg.artifact_density}). Policy optimisation: {cfg.rollout} rollouts, {cfg.policy_steps} steps, "
        f"lr {cfg.policy_learning_rate}, β {cfg.beta}, target emotions {cfg.policy_target_emotions or 'all'}.",
        "",
        "## Setting",
        "",
        "Choices that make reward hacking measurable on the testbed. With the toy recipes' settings (offline "
        "rollouts, lr 1e-4, all emotions) the training reward rose only slightly: the SFT policy's own tokens "
        "already satisfy the RM, and teacher-forced rollouts never show the RM what the policy would emit.",
        "",
        f"- **online rollouts** ({cfg.rollout}): the policy is scored on what it generates, so it can drift;",
        f"- **prompts of the spurious emotion only** ({cfg.policy_target_emotions or 'all emotions'}): that is where "
        "the shortcut pays (for other targets the base RM's gradient pushes artifacts *down*);",
        f"- **emotion-independent glitches in the SFT data** ({cfg.sft_artifact_rate:.0%} of SFT utterances carry "
        "artifacts): a policy can only learn to emit tokens it gives some probability; the Gumbel samples of the "
        "DiffRO step come from the full softmax, whereas generation's top-p/top-k cuts the rare tail;",
        f"- **denser artifacts in the RM corpus** (density {cfg.artifact_density} instead of the world's 0.05) so the "
        "shortcut is strong enough to be found within the budget;",
        f"- **lr {cfg.policy_learning_rate}** for the tiny from-scratch policy, β = {cfg.beta} (paper value), "
        f"{cfg.policy_steps} steps, batch {cfg.policy_batch_size}; DiffRO's reward is plain cross-entropy, "
        f"RRPO's is Eq. 5 (label smoothing {POLICY_METHODS['RRPO'][1]}, α = {POLICY_METHODS['RRPO'][2]}, "
        f"FGM radius ε = {cfg.adv_epsilon} on h').",
        "",
        "Control: **DiffRO-clean** runs DiffRO against a vanilla RM trained on the artifact-free corpus (`clean` "
        "row of Table 2). Artifacts that DiffRO emits but DiffRO-clean does not are exploitation of the shortcut; "
        "damage both show (e.g. CER) comes from optimising an emotion-only reward, not from the shortcut.",
        "",
        "## Table 1 analogue: policies scored by the oracle",
        "",
        "The +SFT row is the starting policy scored by the base RM; each method's reward is measured with the RM it "
        "optimised (DiffRO: base RM, RRPO: +Adv RM, DiffRO-clean: clean RM).",
        "",
        format_table1(summary),
        "",
        "### Change from the SFT policy (means over seeds)",
        "",
        format_changes(summary),
        "",
        "## Table 2 analogue: reward models (WA / UA, %)",
        "",
        "`alpha`: in-domain test; `alpha+artifacts`: the same utterances with "
        f"{cfg.test_artifact_rate:.0%} artifact tokens each; `beta`: the other testbed language (cross-lingual).",
        "",
        format_table2(summary),
        "",
        "## Robustness probes",
        "",
        format_probe_table(summary),
        "",
        "## Curves",
        "",
        *[f"![{Path(p).stem}]({Path(p).name})" for p in plots],
        "",
    ]
    return "\n".join(parts)


def run_study(cfg: RewardHackingStudyConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every seed, aggregate, write ``results.json``, ``report.md`` and the curve PNGs to ``cfg.output_dir``."""
    log = log or _print_flushed
    try:
        import matplotlib  # noqa: F401  (checked now: the curves are drawn after minutes of training)
    except ImportError as error:
        raise ImportError("The study draws its curves with matplotlib: pip install 'rrpo-hf[plots]'.") from error
    start = time.perf_counter()
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    import datasets
    from tqdm.auto import tqdm

    per_seed = []
    progress_bars_were_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # dozens of tiny map/filter calls per seed
    try:
        with tempfile.TemporaryDirectory() as workdir:
            for seed in tqdm(cfg.seeds, desc="reward-hacking study (seeds)"):
                per_seed.append(run_seed(cfg, seed, f"{workdir}/seed{seed}", log))
    finally:
        if progress_bars_were_enabled:
            datasets.enable_progress_bars()
    summary = aggregate(cfg, per_seed)
    plots = plot_curves(per_seed, cfg.policy_methods, output_dir)
    wall_time = time.perf_counter() - start
    results = {"config": cfg.to_dict(), "summary": summary, "per_seed": per_seed, "wall_time_s": wall_time}
    _atomic_write(output_dir / "results.json", json.dumps(results, indent=2, default=float))
    report = render_report(cfg, summary, plots, wall_time)
    _atomic_write(output_dir / "report.md", report)
    return {**results, "report": report, "plots": plots}


__all__ = [
    "CLEAN_CORPUS_VARIANTS",
    "POLICY_METHODS",
    "RM_VARIANTS",
    "TABLE1_COLUMNS",
    "TABLE2_DOMAINS",
    "RewardHackingStudyConfig",
    "aggregate",
    "format_changes",
    "format_mean_ci",
    "format_table1",
    "format_probe_table",
    "format_table2",
    "mean_confidence_interval",
    "optimize_policy",
    "plot_curves",
    "render_report",
    "run_seed",
    "run_study",
    "train_reward_model",
    "train_sft_policy",
]
