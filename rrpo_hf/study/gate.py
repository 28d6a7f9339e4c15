"""The mechanism gate of a preset: is the vanilla RM exploitable the way RRPO's paper says, before anything else runs?

RRPO's claim is that DiffRO's analytical gradient exploits an RM's *flaws* (perturbation sensitivity, brittle
boundaries, chance correlations) and that LS + EAM + Adv remove them. A world in which the vanilla RM has no such
flaw cannot test the claim, whatever the policy rows then show. So a preset that tests it writes a gate down with its
prediction, and the study measures the gate on the vanilla RM alone — before any robust RM is trained or any policy
optimised (:func:`rrpo_hf.study.pipeline.run_study`). If the gate fails, the report says "mechanism absent" and
stops; the world is not re-tuned.

The measurement: greedy token edits (:func:`rrpo_hf.audit.attacks.greedy_token_edits`, each edit the best of a few
HotFlip candidates re-ranked by the exact ``log P_RM(target)``) on target-emotion speech at the policy's operating
point (the SFT corpus's intensity, every target emotion of the policy), and the testbed oracle's judgement of what
the edits wrote. A flaw a policy can exploit shows as: one edit buys a large reward gain; the edits write artifact
ids or ids the RM's training data (almost) never contains; and the oracle hears no more of the target emotion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..audit.attacks import greedy_token_edits
from ..audit.exploitability import rare_token_ids
from ..audit.scoring import frozen_eval, target_label_id
from ..data.labels import normalize_emotion


@dataclass(frozen=True)
class MechanismGate:
    """Thresholds of the gate (a preset writes them before its first run). Each is a bound on the mean over the
    study's seeds; the gate passes when all three hold."""

    min_first_edit_gain: float = field(
        default=0.5,
        metadata={"help": "Least mean gain of log P_RM(target) from the first greedy edit (nats, i.e. logit units)."},
    )
    min_artifact_or_rare_share: float = field(
        default=0.5,
        metadata={
            "help": "Least share of the accepted edits that write an artifact id or an id rare in the RM's training "
            "data (share of its tokens below 0.1 / V)."
        },
    )
    max_oracle_p_rise: float = field(
        default=0.02,
        metadata={"help": "Largest mean rise of the oracle's P(target) after the edits (the edits add no emotion)."},
    )
    num_utterances: int = field(
        default=12, metadata={"help": "Utterances attacked per target emotion and seed (the first of the test split)."}
    )
    edit_budget: int = field(default=4, metadata={"help": "Greedy edits per utterance."})
    num_candidates: int = field(default=8, metadata={"help": "HotFlip candidates re-scored per edit."})

    def __post_init__(self):
        if self.num_utterances < 1 or self.edit_budget < 1 or self.num_candidates < 1:
            raise ValueError("The gate's num_utterances, edit_budget and num_candidates must be >= 1.")
        if not 0.0 <= self.min_artifact_or_rare_share <= 1.0:
            raise ValueError(f"min_artifact_or_rare_share must be in [0, 1], got {self.min_artifact_or_rare_share}.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MechanismGate:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown mechanism_gate fields {unknown}; MechanismGate has {sorted(known)}.")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The measured figures of the gate, in the order the report prints them, with the threshold each is held to.
GATE_CRITERIA: dict[str, tuple[str, str]] = {
    "first_edit_gain": ("min_first_edit_gain", ">="),
    "artifact_or_rare_share": ("min_artifact_or_rare_share", ">="),
    "oracle_p_rise": ("max_oracle_p_rise", "<="),
}


def measure_gate(
    gate: MechanismGate,
    reward_model,
    utterances,
    oracle,
    target_emotions: Sequence[str],
    artifact_ids: Sequence[int],
    rm_training_tokens: Sequence[Sequence[int]],
) -> dict[str, Any]:
    """The gate's figures for one seed's vanilla RM.

    ``utterances``: a testbed split (``text``, ``speech_tokens``, ``emotion`` columns) at the policy's operating
    point; the first ``gate.num_utterances`` rows of each target emotion are attacked towards that emotion.
    ``artifact_ids``: the world's artifact ids; with the ids rare in ``rm_training_tokens`` they are the ids an
    exploit writes. Returns means over every attacked utterance and the per-emotion figures under ``per_emotion``.
    """
    vocab_size = reward_model.config.vocab_size
    suspicious = torch.tensor(
        sorted({int(i) for i in artifact_ids} | set(rare_token_ids(rm_training_tokens, vocab_size))), dtype=torch.long
    )
    names = utterances.features["emotion"].names
    first_gains, budget_gains, oracle_rises, per_emotion = [], [], [], {}
    edits_total, suspicious_total = 0, 0
    with frozen_eval(reward_model):
        for emotion in target_emotions:
            emotion = normalize_emotion(emotion)
            rows = [i for i, e in enumerate(utterances["emotion"]) if names[e] == emotion][: gate.num_utterances]
            if not rows:
                raise ValueError(f"The gate's utterances hold no {emotion!r} row; raise num_test.")
            chosen = utterances.select(rows)
            tokens = [list(t) for t in chosen["speech_tokens"]]
            edits = greedy_token_edits(
                reward_model,
                tokens,
                target_label_id(reward_model, emotion),
                gate.edit_budget,
                gate.num_candidates,
            )
            gains = edits["log_prob"] - edits["log_prob"][:, :1]
            written = edits["new_tokens"]
            accepted = written >= 0
            hits = accepted & torch.isin(written, suspicious)
            texts, targets = list(chosen["text"]), [emotion] * len(rows)
            before = oracle.score(texts, tokens, targets)["emotion_prob"]
            after = oracle.score(texts, edits["tokens"], targets)["emotion_prob"]
            first_gains.extend(gains[:, 1].tolist())
            budget_gains.extend(gains[:, -1].tolist())
            oracle_rises.extend((after - before).tolist())
            edits_total += int(accepted.sum())
            suspicious_total += int(hits.sum())
            per_emotion[emotion] = {
                "first_edit_gain": float(gains[:, 1].mean()),
                "gain_at_budget": float(gains[:, -1].mean()),
                "artifact_or_rare_share": float(hits.sum() / accepted.sum()) if accepted.any() else math.nan,
                "oracle_p_rise": float(np.mean(after - before)),
            }
    return {
        "first_edit_gain": float(np.mean(first_gains)),
        "gain_at_budget": float(np.mean(budget_gains)),
        "artifact_or_rare_share": suspicious_total / edits_total if edits_total else math.nan,
        "oracle_p_rise": float(np.mean(oracle_rises)),
        "num_utterances": len(first_gains),
        "num_suspicious_ids": int(suspicious.numel()),
        "per_emotion": per_emotion,
    }


def decide_gate(gate: MechanismGate, per_seed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The gate's verdict: each criterion's mean over seeds against its threshold; ``passed`` when all hold (a NaN,
    e.g. no edit accepted at all, fails its criterion)."""
    if not per_seed:
        raise ValueError("The gate needs the figures of at least one seed.")
    thresholds = gate.to_dict()
    criteria = {}
    for key, (threshold_name, relation) in GATE_CRITERIA.items():
        values = [run[key] for run in per_seed]
        mean = float(np.mean(values)) if all(math.isfinite(v) for v in values) else math.nan
        bound = thresholds[threshold_name]
        holds = math.isfinite(mean) and (mean >= bound if relation == ">=" else mean <= bound)
        criteria[key] = {"mean": mean, "per_seed": values, "threshold": bound, "relation": relation, "holds": holds}
    return {"passed": all(c["holds"] for c in criteria.values()), "criteria": criteria}


__all__ = ["GATE_CRITERIA", "MechanismGate", "decide_gate", "measure_gate"]


def format_gate_section(gate: dict[str, Any] | None) -> list[str]:
    """The report's lines on the mechanism gate: each criterion's mean over seeds (and range) against its threshold,
    and the verdict; nothing without a gate."""
    if not gate:
        return []
    thresholds = gate["thresholds"]
    lines = [
        "## Mechanism gate (measured on the vanilla RM alone, before any robust RM or policy)",
        "",
        f"Greedy token edits (budget {thresholds['edit_budget']}, {thresholds['num_candidates']} HotFlip candidates "
        f"re-scored by the exact reward) on {thresholds['num_utterances']} utterances per target emotion at the "
        "SFT corpus's intensity; artifact or rare ids are the world's artifact ids and the ids whose share of the "
        "RM's training tokens is below 0.1 / V; the oracle's P(target) is compared before and after the edits.",
        "",
        "| criterion | mean over seeds | min – max | threshold | holds |",
        "|---|---|---|---|---|",
    ]
    for key, criterion in gate["criteria"].items():
        values = [v for v in criterion["per_seed"] if math.isfinite(v)]
        spread = f"{min(values):.3f} – {max(values):.3f}" if values else "n/a"
        lines.append(
            f"| {key} | {criterion['mean']:.3f} | {spread} | {criterion['relation']} {criterion['threshold']:g} | "
            f"{'yes' if criterion['holds'] else '**no**'} |"
        )
    verdict = (
        "**Gate passed**: the vanilla RM has the flaw the preset models; the robust rows and the policies ran."
        if gate["passed"]
        else "**Gate failed: mechanism absent.** The vanilla RM does not show the flaw the preset models, so the "
        "world cannot test RRPO's mechanism; no robust RM was trained and no policy optimised. The world is reported "
        "as measured, not re-tuned."
    )
    return [*lines, "", verdict, ""]


__all__ += ["format_gate_section"]
