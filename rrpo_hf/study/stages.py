"""The stages of one seed of the study: SFT policy, reward models (+ probes), policy optimisation.

The SFT policy and the reward models are built with the builders of :mod:`rrpo_hf.trainers.builders`, the ones
`examples/sft.py` and `examples/train_rm.py` use, so that the study's rows are the models those scripts train.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from datasets import Value, concatenate_datasets
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from ..audit import AuditConfig, audit_reward_model
from ..data.labels import CANONICAL_EMOTIONS, normalize_emotion
from ..evaluation import robustness
from ..evaluation.metrics import compute_emotion_metrics
from ..models.robust_ser import RobustMultiTaskRMConfig
from ..rewards import ASRErrorRate, ASRReward, QualityReward
from ..testbed import (
    EmotionWorld,
    Oracle,
    OracleScorer,
    asr_vocabulary,
    build_testbed_tokenizer,
    insert_artifacts,
    make_emotion_corpus,
    make_quality_corpus,
)
from ..trainers import (
    CosyVoice2SFTTrainer,
    CosyVoiceGRPOConfig,
    CosyVoiceGRPOTrainer,
    DiffROConfig,
    DiffROTrainer,
    MultiTaskRewardConfig,
    MultiTaskRewardTrainer,
    RobustRewardConfig,
    RobustRewardTrainer,
    build_cosyvoice2_sft_collator,
    build_robust_ser_config,
    build_tiny_cosyvoice2_policy,
)
from .checks import check_targets, ensemble_member_name, raise_on_failed_targets, target_emotion_check
from .config import (
    AUDIT_INTENSITIES,
    CLEAN_CORPUS_VARIANTS,
    FINETUNED_VARIANTS,
    POLICY_METHODS,
    RM_VARIANTS,
    RewardHackingStudyConfig,
    audit_target,
    step_time_key,
)
from .gate import measure_gate
from .progress import StageProgress


#: Offset of the fine-tuning set's corpus seed from the study seed: its texts are not those of the RM corpus.
FINETUNE_SEED_OFFSET = 100_003

#: Training-seed offset of ensemble member k (k = 1, 2, ...) from the study seed: same data, other init and order.
ENSEMBLE_SEED_OFFSET = 1_000

#: Corpus and training seed of the multi-task RM, one per study whatever its seeds: it stands for a pretrained,
#: off-the-shelf model (DiffRO's multi-task RM is trained once, on pseudo-labels).
MULTITASK_RM_SEED = 999_983


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


class _StepTimer(TrainerCallback):
    """Seconds spent in optimisation steps (rollouts, rewards, backward, update), evaluations left out: the cost per
    step the GRPO rows are compared on."""

    def __init__(self):
        self.seconds, self.steps, self._start = 0.0, 0, None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self.steps += 1
            self._start = None


def print_flushed(message: str) -> None:
    """The default stage logger of the study."""
    print(message, flush=True)  # stage lines must interleave with the (stderr) progress bars when piped to a file


def _silenced(trainer):
    """Drop the per-log console printer (the study collects every metric from the log history); keep one progress
    line per quarter of the stage."""
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(StageProgress(trainer.args.output_dir))
    return trainer


def train_sft_policy(cfg: RewardHackingStudyConfig, train_dataset, world, seed: int, output_dir: str):
    """The "+SFT" policy: a tiny CosyVoice2LM trained from scratch on `train_dataset` (testbed speech whose rare
    artifacts, if any, are independent of the emotion: see `sft_artifact_rate`)."""
    torch.manual_seed(seed)
    tokenizer = build_testbed_tokenizer(world)
    model = build_tiny_cosyvoice2_policy(
        tokenizer, cfg.codebook_size, hidden_size=cfg.policy_hidden_size, num_hidden_layers=cfg.policy_num_layers
    )
    collator = build_cosyvoice2_sft_collator(tokenizer, model.config, train_dataset.features["emotion"])
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
    # No processing_class: `Trainer` would then "align" the policy's special-token ids with the tokenizer's.
    trainer = _silenced(
        CosyVoice2SFTTrainer(model=model, args=args, train_dataset=train_dataset, data_collator=collator)
    )
    result = trainer.train()
    return model, tokenizer, {"train_loss": float(result.training_loss)}


def train_reward_model(
    cfg: RewardHackingStudyConfig,
    variant: str,
    train_dataset,
    domains,
    seed: int,
    output_dir: str,
    pretrained=None,
):
    """One ablation row: a RobustSER reward model trained on `train_dataset`, scored on every domain: WA, UA,
    macro-F1 and ``recall_<emotion>`` of each emotion the domain's test set holds (the target check reads them).

    From scratch, or, given `pretrained` (a reward model, left untouched), a fine-tune of a copy of it with the
    study's `rm_finetune_*` epochs and learning rate.
    """
    if pretrained is None:
        model = build_robust_ser_config(
            cfg.codebook_size,
            CANONICAL_EMOTIONS,
            hidden_size=cfg.rm_hidden_size,
            num_hidden_layers=cfg.rm_num_layers,
            num_attention_heads=4,
            max_position_embeddings=512,
        )
        epochs, learning_rate = cfg.rm_epochs, cfg.rm_learning_rate
    else:
        model = copy.deepcopy(pretrained).train()
        epochs, learning_rate = cfg.rm_finetune_epochs, cfg.rm_finetune_learning_rate
    args = RobustRewardConfig(
        **_quiet_training_kwargs(output_dir, seed),
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        # A row may fix its own radius (+Adv-0.5); the others take the study's.
        **{"adv_epsilon": cfg.adv_epsilon, "adv_epsilon_scale": cfg.adv_epsilon_scale, **RM_VARIANTS[variant]},
    )
    config = getattr(model, "config", model)  # from scratch, `model` is the config the trainer builds it from
    label_names = [config.id2label[i] for i in range(config.num_labels)]
    trainer = _silenced(
        RobustRewardTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=dict(domains),
            compute_metrics=partial(compute_emotion_metrics, label_names=label_names, return_per_class=True),
        )
    )
    trainer.train()
    metrics = trainer.evaluate()
    model = trainer.model.eval()
    scores = {}
    for domain, table in trainer.eval_results.items():
        prefix = f"eval_{domain}_recall_"
        recalls = {
            k.removeprefix("eval_" + domain + "_"): float(v) for k, v in metrics.items() if k.startswith(prefix)
        }
        scores[domain] = {**table, **recalls}
    return model, scores


def train_multitask_reward_model(cfg: RewardHackingStudyConfig, world: EmotionWorld, output_dir: str):
    """The multi-task RM of the remedy rows: ASR (CTC over the phonemes) and quality (oracle naturalness classes)
    heads on the RobustSER encoder, trained on natural and degraded alpha speech of a corpus seed of its own
    (`make_quality_corpus`). Returns the model and its test ``asr_cer`` / ``quality_accuracy``."""
    corpus = make_quality_corpus(
        "alpha", cfg.multitask_rm_num_train, cfg.num_test, world=world, seed=MULTITASK_RM_SEED
    )
    config = RobustMultiTaskRMConfig(
        vocab_size=cfg.codebook_size,
        hidden_size=cfg.rm_hidden_size,
        num_hidden_layers=cfg.rm_num_layers,
        num_attention_heads=4,
        intermediate_size=2 * cfg.rm_hidden_size,
        max_position_embeddings=512,
        asr_labels=asr_vocabulary(world),
        tasks=["asr", "quality"],
    )
    args = MultiTaskRewardConfig(
        **_quiet_training_kwargs(output_dir, MULTITASK_RM_SEED),
        learning_rate=3e-3,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        num_train_epochs=cfg.multitask_rm_epochs,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
    )
    trainer = _silenced(
        MultiTaskRewardTrainer(config, args=args, train_dataset=corpus["train"], eval_dataset=corpus["test"])
    )
    trainer.train()
    metrics = trainer.evaluate()
    scores = {key: float(metrics[f"eval_{key}"]) for key in ("asr_cer", "quality_accuracy")}
    return trainer.model.eval(), scores


def run_probes(
    cfg: RewardHackingStudyConfig, reward_model, domains, world, seed: int, exaggerated=None
) -> dict[str, float]:
    """Direct robustness probes of one reward model (:mod:`rrpo_hf.evaluation.robustness`) on natural alpha speech.

    Keys: ``artifact_delta_p`` / ``artifact_flip_rate`` (rise of P(spurious emotion) and fraction of other-emotion
    utterances flipped to it when artifacts are inserted), ``substitution_attack_success`` (fraction of correctly
    classified utterances flipped by ``probe_substitutions`` gradient-chosen token swaps),
    ``exaggeration_delta_p`` (with ``exaggerated``, the alpha test utterances at `probe_exaggeration`: rise of
    P(spurious emotion) on its utterances when their prosody is exaggerated; positive = the RM pays for it) and
    ``embedding_attack_accuracy@<eps>`` / ``embedding_attack_drop@<eps>`` (accuracy under a PGD attack of L2 size
    eps on h', for each of ``probe_epsilons``) and ``hidden_norm`` (mean per-utterance L2 norm of h', the scale the
    radii should be read against).
    """
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
        if exaggerated is not None:
            names = natural.features["emotion"].names
            rows = [i for i, emotion in enumerate(emotions) if names[emotion] == normalize_emotion(target)]
            if rows:
                exaggeration = robustness.exaggeration_sensitivity(
                    reward_model,
                    [tokens[i] for i in rows],
                    exaggerated.select(rows)["speech_tokens"],
                    target_emotion=target,
                    show_progress=False,
                )
                probes[f"exaggeration_delta_p{suffix}"] = exaggeration["mean_delta"]
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


def build_audit_dataset(cfg: RewardHackingStudyConfig, world: EmotionWorld, seed: int):
    """Alpha test utterances of the audit's target emotion at each of :data:`AUDIT_INTENSITIES`
    (`audit_num_utterances` each, same texts at every intensity), with an ``intensity`` column; None without audit
    (`audit_num_utterances` = 0, or no test utterance of the target emotion)."""
    if cfg.audit_num_utterances <= 0:
        return None
    target, parts = audit_target(cfg), []
    for intensity in AUDIT_INTENSITIES:
        test = make_emotion_corpus("alpha", 0, cfg.num_test, world=world, seed=seed, intensity=intensity)["test"]
        names = test.features["emotion"].names
        rows = [i for i, emotion in enumerate(test["emotion"]) if names[emotion] == target]
        part = test.select(rows[: cfg.audit_num_utterances]).select_columns(["speech_tokens", "emotion"])
        parts.append(
            part.add_column("intensity", [float(intensity)] * len(part)).cast_column("intensity", Value("float64"))
        )
    audit_dataset = concatenate_datasets(parts)
    return audit_dataset if len(audit_dataset) else None  # a test split too small to hold the target emotion


def run_audit(cfg: RewardHackingStudyConfig, reward_model, audit_dataset, world: EmotionWorld, seed: int) -> dict:
    """The exploitability audit of one RM row (:func:`rrpo_hf.audit.audit_reward_model`) on ``audit_dataset``; the
    world's artifact ids are the artifact ids (in `dataset-bias` they are common in the RM's training data, so they
    are not rare there)."""
    config = AuditConfig(
        target_emotion=audit_target(cfg),
        num_utterances=cfg.audit_num_utterances,
        edit_budget=cfg.audit_edit_budget,
        num_candidates=8,
        gumbel_steps=cfg.audit_gumbel_steps,
        artifact_ids=[int(i) for i in world.artifact_token_ids],
        seed=seed,
    )
    return audit_reward_model(reward_model, audit_dataset, config)


def policy_prompts(dataset, target_emotions: Sequence[str] | None, limit: int | None = None):
    """Prompt rows (text + target emotion) whose target is one of ``target_emotions`` (all when None)."""
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
    beta: float | None = None,
    multitask_rm=None,
) -> dict[str, Any]:
    """Optimise a copy of the SFT policy with one of :data:`POLICY_METHODS` against `reward_model` (KL weight
    `beta`, default the study's).

    ``reward_model`` is one emotion RM, or for an ensemble row the list of its members. ``multitask_rm`` (the ASR and
    quality heads) gives the ASR / quality rewards and the CER gate of the rows that ask for them.

    Returns ``curve`` (evaluation points: step 0 = the SFT policy, then every ``eval_steps``), ``train_log``
    (training reward and KL per logging window), ``start`` and ``final`` (first and last curve points), ``steps``
    and ``step_seconds`` (optimisation steps taken and their seconds, evaluations left out; `run_seed` moves the
    seconds into its ``timings_s``). A `"grpo"` method trains with `CosyVoiceGRPOTrainer` instead of DiffRO. A row with
    several rewards, or a weighted one (`normalize_reward`), reports its emotion reward unweighted as ``reward``
    (Table 1's "reward of the method's own RM") and the weighted sum the trainer optimised as ``reward_total``.
    """
    spec = POLICY_METHODS[method]
    reward_funcs, weights, gate = [], [spec.reward_weight], {}
    if spec.needs_multitask_rm and multitask_rm is None:
        raise ValueError(f"Policy method {method!r} needs the multi-task reward model (ASR / quality heads).")
    if spec.asr_reward:
        reward_funcs.append(ASRReward(multitask_rm))
        weights.append(cfg.asr_reward_weight)
    if spec.quality_reward:
        reward_funcs.append(QualityReward(multitask_rm))
        weights.append(cfg.quality_reward_weight)
    if spec.cer_gate:
        reward_funcs.append(ASRErrorRate(multitask_rm))
        weights.append(0.0)  # a gate, not a reward
        gate = dict(reward_gate="asr_cer", reward_gate_threshold=-cfg.gate_max_cer)
    if spec.ensemble is not None:
        gate.update(reward_aggregation=spec.ensemble, reward_ensemble_std_coef=cfg.ensemble_std_coef)
    common = dict(
        **{**_quiet_training_kwargs(output_dir, seed), "logging_steps": cfg.eval_steps},
        beta=cfg.beta if beta is None else beta,
        reward_label_smoothing=spec.label_smoothing,
        # The reward's ε_adv and its scale rule are the RM's own (saved in its config with the rest of its loss).
        reward_adv_alpha=spec.adv_alpha,
        reward_weights=weights if reward_funcs or spec.normalize_reward else None,
        **gate,
        lr_scheduler_type="constant",
        max_steps=cfg.policy_steps,
        per_device_eval_batch_size=64,
        max_new_tokens=cfg.max_new_tokens,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        eval_seed=seed + 1234,
        eval_kl=True,  # the curves' x-axis: sqrt KL(policy || SFT policy) on the evaluation samples
    )
    if spec.optimizer == "grpo":
        # The same prompts per step as a DiffRO row, each generated G times (TRL's batch counts completions).
        trainer_class = CosyVoiceGRPOTrainer
        args = CosyVoiceGRPOConfig(
            **common,
            num_generations=cfg.grpo_num_generations,
            per_device_train_batch_size=cfg.policy_batch_size * cfg.grpo_num_generations,
            learning_rate=cfg.grpo_learning_rate or cfg.policy_learning_rate,
        )
    else:
        trainer_class = DiffROTrainer
        args = DiffROConfig(
            **common,
            rollout=cfg.rollout,
            gumbel_sampling=spec.gumbel_sampling,
            learning_rate=cfg.policy_learning_rate,
            per_device_train_batch_size=cfg.policy_batch_size,
        )
    timer = _StepTimer()
    trainer = trainer_class(
        callbacks=[timer],
        model=copy.deepcopy(sft_policy),
        reward_model=reward_model,
        reward_funcs=reward_funcs or None,
        args=args,
        train_dataset=train_prompts,
        eval_dataset=eval_prompts,
        processing_class=tokenizer,
        eval_scorers=None if oracle is None else [OracleScorer(oracle)],
    )
    _silenced(trainer)
    # Step 0 = the SFT policy under this method's RM; train() starts a fresh log history, so keep it aside.
    start = {"step": 0, **{k.removeprefix("eval_"): float(v) for k, v in trainer.evaluate().items()}}
    trainer.train()
    curve = [start] + [
        {
            "step": int(entry["step"]),
            **{k.removeprefix("eval_"): float(v) for k, v in entry.items() if k.startswith("eval_")},
        }
        for entry in trainer.state.log_history
        if "eval_reward" in entry
    ]
    for point in curve:
        point.pop("runtime", None)
        point.pop("samples", None)
        if len(trainer.reward_funcs) > 1 or spec.normalize_reward:
            # Table 1's reward is the emotion reward unweighted (RRPO-norm: the unscaled Eq. 5 reward).
            point["reward_total"], point["reward"] = point["reward"], point["rewards/emotion/mean"]
    train_log = [
        {"step": int(entry["step"]), "reward": float(entry["reward"]), "kl": float(entry.get("kl", float("nan")))}
        for entry in trainer.state.log_history
        if "reward" in entry and "loss" in entry
    ]
    return {
        "curve": curve,
        "train_log": train_log,
        "start": curve[0],
        "final": curve[-1],
        "step_seconds": timer.seconds,
        "steps": timer.steps,
    }


def _intensity(values: Sequence[float]) -> float | tuple[float, float]:
    return values[0] if len(values) == 1 else tuple(values)


def build_corpora(cfg: RewardHackingStudyConfig, world: EmotionWorld, seed: int) -> dict[str, Any]:
    """The corpora of one seed, all in language alpha unless said otherwise.

    ``natural``: natural speech at full strength (its train texts are the policy's prompts, its test split the
    in-domain test); ``sft``: the same texts at `sft_intensity` with emotion-independent glitches
    (`sft_artifact_rate`); ``rm``: the RM training corpus (`rm_num_speakers` speakers, `rm_intensity`, the
    shortcut of `spurious_artifact_rate`, `rm_label_noise`); ``clean``: the same texts and speakers with correct
    labels and only emotion-independent glitches (`clean_artifact_rate`); ``finetune``: the small clean
    single-speaker set of the paper's protocol (``None`` without `rm_finetune_num_train`); ``domains``: the test
    sets of Table 2 (``alpha``, ``alpha+artifacts``, ``beta``); ``exaggerated``: the ``alpha`` test utterances
    rendered at `probe_exaggeration` (the exaggeration probe).
    """
    natural = make_emotion_corpus("alpha", cfg.num_train, cfg.num_test, world=world, seed=seed)
    # Same texts and renderings as `natural` (same seed) at the SFT intensity, with emotion-independent artifacts.
    sft = make_emotion_corpus(
        "alpha",
        cfg.num_train if cfg.sft_num_train is None else cfg.sft_num_train,
        0,
        world=world,
        seed=seed,
        spurious_artifact_rate=cfg.sft_artifact_rate,
        spurious_emotions=tuple(CANONICAL_EMOTIONS),
        intensity=_intensity(cfg.sft_intensity),
    )
    rm = make_emotion_corpus(
        "alpha",
        cfg.num_train if cfg.rm_num_train is None else cfg.rm_num_train,
        0,
        world=world,
        seed=seed,
        num_speakers=cfg.rm_num_speakers,
        spurious_artifact_rate=cfg.spurious_artifact_rate,
        spurious_emotions=tuple(cfg.spurious_emotions),
        intensity=_intensity(cfg.rm_intensity),
        label_noise=cfg.rm_label_noise,
    )
    clean = make_emotion_corpus(
        "alpha",
        cfg.num_train,
        0,
        world=world,
        seed=seed,
        num_speakers=cfg.rm_num_speakers,
        spurious_artifact_rate=cfg.clean_artifact_rate,
        spurious_emotions=tuple(CANONICAL_EMOTIONS),
        intensity=_intensity(cfg.rm_intensity),
    )
    finetune = None
    if cfg.rm_finetune_num_train > 0:
        finetune = make_emotion_corpus(
            "alpha",
            cfg.rm_finetune_num_train,
            0,
            world=world,
            seed=seed + FINETUNE_SEED_OFFSET,
            num_speakers=cfg.rm_finetune_num_speakers,
        )["train"]
    # The alpha test texts again, every cue pushed to `probe_exaggeration` (same texts, emotions and speakers).
    exaggerated = make_emotion_corpus(
        "alpha", cfg.num_train, cfg.num_test, world=world, seed=seed, intensity=cfg.probe_exaggeration
    )["test"]
    beta = make_emotion_corpus("beta", 0, cfg.num_test, world=world, seed=seed)["test"]
    test = natural["test"]
    corrupted = insert_artifacts(test["speech_tokens"], cfg.test_artifact_rate, world, seed=seed)
    with_artifacts = test.remove_columns("speech_tokens").add_column("speech_tokens", corrupted).cast(test.features)
    return {
        "natural": natural,
        "sft": sft["train"],
        "rm": rm["train"],
        "clean": clean["train"],
        "finetune": finetune,
        "domains": {"alpha": test, "alpha+artifacts": with_artifacts, "beta": beta},
        "exaggerated": exaggerated,
    }


def _reward_model_corpus(variant: str, corpora: dict[str, Any], reward_models: dict[str, Any]):
    """What an `RM_VARIANTS` row trains on: the clean corpus, the fine-tuning set (then it fine-tunes the base RM of
    `reward_models`), or the RM corpus; ``(corpus, pretrained RM or None)``."""
    if variant in CLEAN_CORPUS_VARIANTS:
        return corpora["clean"], None
    if variant in FINETUNED_VARIANTS and corpora["finetune"] is not None:
        return corpora["finetune"], reward_models["base"]
    return corpora["rm"], None


def _train_reward_model_row(cfg, variant, corpora, reward_models, seed, workdir):
    """The RM of one `RM_VARIANTS` row, trained on its corpus; the model and its Table 2 scores."""
    corpus, pretrained = _reward_model_corpus(variant, corpora, reward_models)
    return train_reward_model(
        cfg, variant, corpus, corpora["domains"], seed, f"{workdir}/rm_{variant}", pretrained=pretrained
    )


def gate_utterances(cfg: RewardHackingStudyConfig, world: EmotionWorld, seed: int):
    """The speech the mechanism gate attacks: alpha test utterances at the SFT corpus's intensity (the policy's
    operating point), every emotion; the gate selects the target ones."""
    return make_emotion_corpus(
        "alpha", 0, cfg.num_test, world=world, seed=seed, intensity=_intensity(cfg.sft_intensity)
    )["test"]


def run_gate_seed(
    cfg: RewardHackingStudyConfig, seed: int, workdir: str, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """The mechanism gate of one seed (:mod:`rrpo_hf.study.gate`): its vanilla (base) RM, trained as `run_seed`
    trains it, and the gate's figures on that RM alone. Returns ``gate`` (the figures), ``base`` (the model and its
    Table 2 scores, handed to `run_seed` when the gate passes) and ``seconds``."""
    log = log or print_flushed
    start = time.perf_counter()
    world = EmotionWorld(cfg.testbed_config())
    corpora = build_corpora(cfg, world, seed)
    log(f"[seed {seed}] mechanism gate: vanilla reward model")
    model, table2 = _train_reward_model_row(cfg, "base", corpora, {}, seed, workdir)
    figures = measure_gate(
        cfg.gate(),
        model,
        gate_utterances(cfg, world, seed),
        Oracle(world, cfg.oracle_config()),
        cfg.policy_target_emotions or list(CANONICAL_EMOTIONS),
        [int(i) for i in world.artifact_token_ids],
        corpora["rm"]["speech_tokens"],
    )
    log(
        f"[seed {seed}] mechanism gate: first edit +{figures['first_edit_gain']:.3f} nats, artifact/rare share "
        f"{figures['artifact_or_rare_share']:.2f}, oracle P(target) {figures['oracle_p_rise']:+.4f}"
    )
    return {"gate": figures, "base": (model, table2), "seconds": time.perf_counter() - start}


def stage_times(timings: dict[str, float]) -> dict[str, float]:
    """A seed's `timings_s` summed by kind of stage: corpora, SFT, RM training, probes, audits, policy optimisation
    steps and policy evaluation (a row's seconds less its optimisation steps), and the total."""
    suffix = " (optimisation steps)"
    policy_rows = {key.removesuffix(suffix) for key in timings if key.endswith(suffix)}
    totals: dict[str, float] = {}
    for key, seconds in timings.items():
        if key.endswith(suffix):
            totals["policy steps"] = totals.get("policy steps", 0.0) + seconds
            continue
        if key in policy_rows:
            kind = "policy evaluation"
            seconds -= timings[key + suffix]
        else:
            kind = {"rm": "RM training", "ensemble": "RM training", "probes": "probes", "audit": "audit"}.get(
                key.split(" ", 1)[0], key
            )
        totals[kind] = totals.get(kind, 0.0) + seconds
    totals["total"] = sum(totals.values())
    return totals


def format_stage_times(timings: dict[str, float]) -> str:
    """One line of :func:`stage_times`: ``SFT 87 s, RM training 40 s, ... total 400 s``."""
    return ", ".join(f"{kind} {seconds:.0f} s" for kind, seconds in stage_times(timings).items())


def _check_target(
    cfg: RewardHackingStudyConfig, seed: int, name: str, scores: dict, audit_row: dict | None, log: Callable
) -> dict:
    """The target check of one RM of one seed (its alpha test scores and audit row); a WARNING line when it fails."""
    check = target_emotion_check(
        scores.get("alpha", {}), audit_row, check_targets(cfg), cfg.target_check_min_recall, cfg.target_check_min_rise
    )
    if not check["passed"]:
        log(f"[seed {seed}] WARNING: reward model {name} fails the target check: {'; '.join(check['failures'])}")
    return check


def run_seed(
    cfg: RewardHackingStudyConfig,
    seed: int,
    workdir: str,
    log: Callable[[str], None] | None = None,
    multitask_rm=None,
    trained_reward_models: dict[str, tuple[Any, dict]] | None = None,
) -> dict:
    """The whole pipeline for one seed; ``log`` gets one line per stage (default: print, flushed). ``multitask_rm``:
    the study's multi-task RM, for the rows with ASR / quality rewards or the CER gate. ``trained_reward_models``:
    RM rows already trained for this seed (variant -> (model, Table 2 scores)), e.g. the base RM the mechanism gate
    trained; they are used as they are."""
    log = log or print_flushed
    timings: dict[str, float] = {}
    world = EmotionWorld(cfg.testbed_config())  # the study's `testbed` overrides; see its help
    oracle = Oracle(world, cfg.oracle_config())
    start = time.perf_counter()
    corpora = build_corpora(cfg, world, seed)
    natural, domains = corpora["natural"], corpora["domains"]
    timings["corpora"] = time.perf_counter() - start

    start = time.perf_counter()
    log(f"[seed {seed}] SFT policy")
    sft_policy, tokenizer, sft_metrics = train_sft_policy(cfg, corpora["sft"], world, seed, f"{workdir}/sft")
    timings["sft"] = time.perf_counter() - start

    audit_dataset = build_audit_dataset(cfg, world, seed)
    reward_models, table2, probes, audits, target_checks = {}, {}, {}, {}, {}
    for variant in cfg.rm_variants:
        start = time.perf_counter()
        if variant in (trained_reward_models or {}):
            reward_models[variant], table2[variant] = trained_reward_models[variant]
        else:
            log(f"[seed {seed}] reward model {variant}")
            reward_models[variant], table2[variant] = _train_reward_model_row(
                cfg, variant, corpora, reward_models, seed, workdir
            )
        timings[f"rm {variant}"] = time.perf_counter() - start
        start = time.perf_counter()
        probes[variant] = run_probes(cfg, reward_models[variant], domains, world, seed, corpora["exaggerated"])
        timings[f"probes {variant}"] = time.perf_counter() - start
        if audit_dataset is not None:
            start = time.perf_counter()
            audits[variant] = run_audit(cfg, reward_models[variant], audit_dataset, world, seed)
            timings[f"audit {variant}"] = time.perf_counter() - start
        target_checks[variant] = _check_target(cfg, seed, variant, table2[variant], audits.get(variant), log)
    raise_on_failed_targets(cfg, seed, target_checks)  # with target_check='fail', before any policy row

    # Ensemble rows: ensemble_size - 1 more RMs of the row's variant, same data and recipe, other training seeds.
    ensembles = {}
    for variant in sorted(
        {POLICY_METHODS[m].rm_variant for m, _ in cfg.policy_rows().values() if POLICY_METHODS[m].ensemble}
    ):
        start = time.perf_counter()
        corpus, pretrained = _reward_model_corpus(variant, corpora, reward_models)
        members = [reward_models[variant]]
        for k in range(1, cfg.ensemble_size):
            log(f"[seed {seed}] reward model {variant}, ensemble member {k + 1}/{cfg.ensemble_size}")
            member, scores = train_reward_model(
                cfg,
                variant,
                corpus,
                {"alpha": domains["alpha"]},
                seed + ENSEMBLE_SEED_OFFSET * k,
                f"{workdir}/rm_{variant}_member{k}",
                pretrained=pretrained,
            )
            members.append(member)
            # Each member is part of the reward the ensemble rows optimise: it must see the target emotion too.
            audit = None if audit_dataset is None else run_audit(cfg, member, audit_dataset, world, seed)
            name = ensemble_member_name(variant, k + 1)
            target_checks[name] = _check_target(cfg, seed, name, scores, audit, log)
        ensembles[variant] = members
        timings[f"ensemble {variant}"] = time.perf_counter() - start
    raise_on_failed_targets(cfg, seed, target_checks)  # the members', before any policy row

    train_prompts = policy_prompts(natural["train"], cfg.policy_target_emotions)
    eval_prompts = policy_prompts(domains["alpha"], cfg.policy_target_emotions, cfg.num_eval_prompts)
    policies = {}
    for row, (method, beta) in cfg.policy_rows().items():
        start = time.perf_counter()
        log(f"[seed {seed}] {row} policy optimisation")
        spec = POLICY_METHODS[method]
        policies[row] = optimize_policy(
            cfg,
            method,
            sft_policy,
            tokenizer,
            ensembles[spec.rm_variant] if spec.ensemble else reward_models[spec.rm_variant],
            train_prompts,
            eval_prompts,
            oracle,
            seed,
            f"{workdir}/{row}",
            beta=beta,
            multitask_rm=multitask_rm,
        )
        timings[row] = time.perf_counter() - start
        # Wall-clock, so with the other timings (kept out of the results that must repeat exactly).
        if "step_seconds" in policies[row]:
            timings[step_time_key(row)] = policies[row].pop("step_seconds")
    log(f"[seed {seed}] stage times: {format_stage_times(timings)}")
    return {
        "seed": seed,
        "sft": sft_metrics,
        "table2": table2,
        "probes": probes,
        "audit": audits,
        "target_check": target_checks,
        "policies": policies,
        "timings_s": timings,
    }


__all__ = [
    "ENSEMBLE_SEED_OFFSET",
    "FINETUNE_SEED_OFFSET",
    "MULTITASK_RM_SEED",
    "build_audit_dataset",
    "build_corpora",
    "optimize_policy",
    "policy_prompts",
    "print_flushed",
    "run_audit",
    "format_stage_times",
    "gate_utterances",
    "run_gate_seed",
    "run_probes",
    "run_seed",
    "stage_times",
    "train_multitask_reward_model",
    "train_reward_model",
    "train_sft_policy",
]
