"""The audit's outputs: one table row per reward model, `audit.json`, and the gain and intensity plots."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils.saving import atomic_write, atomic_write_text


#: Table columns: key of an audit row -> (header, digits).
AUDIT_COLUMNS: dict[str, tuple[str, int]] = {
    "p_target": ("P(target)", 3),
    "hidden_norm_utterance": ("‖h'‖ utt.", 1),
    "hidden_norm_frame": ("‖h'‖ frame", 2),
    "loss_adv_epsilon": ("ε_adv", 2),
    "adv_epsilon_over_hidden_norm": ("ε_adv/‖h'‖", 4),
    "fgm_gain": ("FGM Δlog P @ε_adv", 4),
    "fgm_gain@rel0.05": ("FGM Δlog P @5%‖h'‖", 3),
    "gain_first_edit": ("Δlog P 1 edit", 3),
    "gain_per_edit": ("Δlog P / edit", 3),
    "delta_p_at_budget": ("ΔP @budget", 3),
    "artifact_edit_share": ("artifact edits", 2),
    "hidden_shift_per_edit": ("‖Δh'‖ / edit", 2),
    "gumbel_gain": ("Gumbel Δlog P", 3),
    "gumbel_edits": ("Gumbel edits", 1),
    "artifact_delta_p": ("ΔP +artifacts", 3),
    "intensity_rise": ("P rise to intensity 1", 3),
}


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, Mapping):  # mean ± CI from the study's statistics
        mean, ci = value.get("mean"), value.get("ci")
        if mean is None:
            return "n/a"
        return f"{mean:.{digits}f}" + (f" ± {ci:.{digits}f}" if ci is not None and ci == ci else "")
    return f"{value:.{digits}f}"


def format_audit_table(
    rows: Mapping[str, Mapping[str, Any]], columns: Mapping[str, tuple[str, int]] | None = None
) -> str:
    """A markdown table, one row per reward model (``rows``: name -> audit row, or name -> key -> mean ± CI); columns
    that no row has are left out."""
    columns = dict(columns or AUDIT_COLUMNS)
    present = [key for key in columns if any(key in row for row in rows.values())]
    lines = [
        "| reward model | " + " | ".join(columns[key][0] for key in present) + " |",
        "|---|" + "---:|" * len(present),
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(key), columns[key][1]) for key in present) + " |")
    return "\n".join(lines)


def plot_audit(rows: Mapping[str, Mapping[str, Any]], output_dir: str | os.PathLike) -> list[str]:
    """``audit_gain_curve.png`` (mean reward gain against the edit budget, one line per RM) and, when some row has
    an intensity curve, ``audit_intensity.png`` (P(target) against the emotion's intensity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    paths = []
    figure, axes = plt.subplots(figsize=(5.5, 3.8))
    for name, row in rows.items():
        curve = row.get("gain_curve") or []
        axes.plot(range(len(curve)), curve, marker="o", label=name)
    axes.set_xlabel("greedy token edits")
    axes.set_ylabel("Δ log P_RM(target)")
    axes.set_title("Reward gain against the edit budget", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    paths.append(_save(figure, output_dir / "audit_gain_curve.png", plt))
    if any(row.get("intensity_curve") for row in rows.values()):
        figure, axes = plt.subplots(figsize=(5.5, 3.8))
        for name, row in rows.items():
            curve = row.get("intensity_curve") or []
            if curve:
                axes.plot([p["intensity"] for p in curve], [p["p_target"] for p in curve], marker="o", label=name)
        axes.set_xlabel("emotion intensity (1 = natural full strength)")
        axes.set_ylabel("mean P_RM(target)")
        axes.set_ylim(0, 1)
        axes.set_title("Response to the target emotion's strength", fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        paths.append(_save(figure, output_dir / "audit_intensity.png", plt))
    return paths


def _save(figure, path: Path, plt) -> str:
    try:
        atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=100, format="png"))
    finally:
        plt.close(figure)
    return str(path)


def write_audit(
    rows: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike, settings: Mapping[str, Any] | None = None
) -> Path:
    """``output_dir/audit.json``: ``{"models": rows, "settings": settings}``."""
    path = Path(output_dir) / "audit.json"
    atomic_write_text(path, json.dumps({"models": list(rows), "settings": dict(settings or {})}, indent=2) + "\n")
    return path


__all__ = ["AUDIT_COLUMNS", "format_audit_table", "plot_audit", "write_audit"]
