"""The reward-model exploitability audit: white-box attacks that mirror what a policy can do to a reward model, and
the scale of its adversarial regulariser (docs/audit.md).

It sits in the layer of `trainers`: the DiffRO-path attack optimises the reward function `DiffROTrainer` uses
(`rewards`), and the artifact probe inserts tokens with `evaluation.robustness`; the testbed is not imported (the
study passes its datasets and artifact ids in).
"""

from .attacks import greedy_token_edits, gumbel_token_attack
from .exploitability import (
    AuditConfig,
    audit_reward_model,
    emotion_names_of,
    fgm_gains,
    intensity_response,
    rare_token_ids,
)
from .report import AUDIT_COLUMNS, format_audit_table, plot_audit, write_audit
from .scoring import (
    check_reward_model,
    hidden_state_norms,
    load_audit_model,
    rm_loss_settings,
    score_tokens,
    target_label_id,
)


__all__ = [
    "AUDIT_COLUMNS",
    "AuditConfig",
    "audit_reward_model",
    "check_reward_model",
    "emotion_names_of",
    "fgm_gains",
    "format_audit_table",
    "greedy_token_edits",
    "gumbel_token_attack",
    "hidden_state_norms",
    "intensity_response",
    "load_audit_model",
    "plot_audit",
    "rare_token_ids",
    "rm_loss_settings",
    "score_tokens",
    "target_label_id",
    "write_audit",
]
