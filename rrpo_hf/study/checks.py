"""Whether each reward model sees the target emotion, checked per seed before any policy is optimised against it.

An RM that cannot tell the target emotion from the others gives a reward the policy can only raise by exploiting
whatever else it reads; a study row optimised against it measures that, not the method. Two measurements per RM
row and seed: the recall of each target emotion on the natural alpha test set (the diagonal of Table 2's confusion
matrix over its row, :func:`~rrpo_hf.evaluation.metrics.emotion_recognition_scores`) and the audit's rise of
P(target) from intensity 0 to 1 (``intensity_rise``, :mod:`rrpo_hf.audit`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..data.labels import CANONICAL_EMOTIONS, normalize_emotion
from .config import POLICY_METHODS, RewardHackingStudyConfig


def check_targets(cfg: RewardHackingStudyConfig) -> list[str]:
    """The emotions the target check reads: the policy's target emotions, every emotion when they are None."""
    return [normalize_emotion(e) for e in (cfg.policy_target_emotions or CANONICAL_EMOTIONS)]


def target_emotion_check(
    scores: Mapping[str, float],
    audit_row: Mapping[str, Any] | None,
    targets: Sequence[str],
    min_recall: float,
    min_rise: float,
) -> dict[str, Any]:
    """One RM row of one seed: ``recall`` of each of ``targets`` (``scores["recall_<emotion>"]``, the RM's natural
    alpha test scores; None where the test set holds no utterance of it), ``intensity_rise`` (the audit row's;
    None without audit), ``passed``, and ``failures``: one line per measurement below its bar. A measurement that
    could not be made is reported as None and does not fail the row."""
    recall = {target: scores.get(f"recall_{target}") for target in targets}
    rise = None if audit_row is None else audit_row.get("intensity_rise")
    failures = [
        f"recall of {target} {value:.3f} < {min_recall:g}"
        for target, value in recall.items()
        if value is not None and value < min_recall
    ]
    if rise is not None and rise < min_rise:
        failures.append(f"intensity rise of P(target) {rise:+.3f} < {min_rise:g}")
    return {"recall": recall, "intensity_rise": rise, "passed": not failures, "failures": failures}


def ensemble_member_name(variant: str, member: int) -> str:
    """The name an ensemble member's target check is reported under: member 1 is the RM row `variant` itself,
    members 2..`ensemble_size` the extra RMs trained for the ensemble rows with other seeds."""
    return f"{variant} member {member}"


def optimised_rm_rows(cfg: RewardHackingStudyConfig) -> dict[str, list[str]]:
    """Checked RM -> the policy rows that optimise against it: an RM row, or an ensemble member
    (:func:`ensemble_member_name`), which every ensemble row of its variant optimises against as well."""
    rows: dict[str, list[str]] = {}
    for row, (method, _) in cfg.policy_rows().items():
        spec = POLICY_METHODS[method]
        rows.setdefault(spec.rm_variant, []).append(row)
        if spec.ensemble:
            for member in range(2, cfg.ensemble_size + 1):
                rows.setdefault(ensemble_member_name(spec.rm_variant, member), []).append(row)
    return rows


def checked_rm_names(cfg: RewardHackingStudyConfig) -> list[str]:
    """Every RM the target check reads, in report order: the RM rows, then each ensemble member beyond the first."""
    members = [name for name in optimised_rm_rows(cfg) if name not in cfg.rm_variants]
    return list(cfg.rm_variants) + members


class TargetCheckError(RuntimeError):
    """A reward model a policy row optimises against does not see the target emotion (`target_check='fail'`)."""


def raise_on_failed_targets(cfg: RewardHackingStudyConfig, seed: int, checks: Mapping[str, Mapping]) -> None:
    """With `target_check='fail'`, raise :class:`TargetCheckError` when an RM a policy row optimises against failed
    its check in this seed; the message names the RM row, the seed, the measurements and the fixes."""
    if cfg.target_check != "fail":
        return
    users = optimised_rm_rows(cfg)
    failed = [(variant, check) for variant, check in checks.items() if not check["passed"] and variant in users]
    if not failed:
        return
    lines = [
        f"reward model {variant!r} (optimised by {users[variant]}) in seed {seed}: " + "; ".join(check["failures"])
        for variant, check in failed
    ]
    raise TargetCheckError(
        "Target check failed before policy optimisation: "
        + " | ".join(lines)
        + ". The RM does not tell the target emotion apart, so a policy would be optimised against what else it "
        "reads. Fix: train the RM further (rm_epochs / rm_finetune_epochs, rm_learning_rate) or on more or "
        "cleaner target-emotion data (num_train, rm_label_noise, rm_intensity); or set target_check='flag' to run "
        "the rows anyway, flagged in the report (target_check_min_recall / target_check_min_rise set the bars)."
    )


__all__ = [
    "TargetCheckError",
    "check_targets",
    "checked_rm_names",
    "ensemble_member_name",
    "optimised_rm_rows",
    "raise_on_failed_targets",
    "target_emotion_check",
]
