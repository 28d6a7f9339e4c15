"""Edit distance and the error rate built on it (CER / WER): ``edits(hypothesis, reference) / |reference|``.

Levenshtein distance counts the fewest substitutions, insertions and deletions that turn one sequence into the
other; computed one row of the dynamic programme at a time. Pure Python over any hashable symbols (ids or strings).
"""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(hypothesis: Sequence, reference: Sequence) -> int:
    """Levenshtein distance between two symbol sequences."""
    previous = list(range(len(reference) + 1))
    for i, symbol in enumerate(hypothesis, start=1):
        current = [i]
        for j, target in enumerate(reference, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (symbol != target)))
        previous = current
    return previous[-1]


def error_rate(hypothesis: Sequence, reference: Sequence) -> float:
    """``edit_distance / |reference|`` (CER over characters or phonemes, WER over words); an empty reference gives
    the hypothesis length (every symbol of it is an insertion), so the rate is never undefined."""
    return edit_distance(hypothesis, reference) / max(len(reference), 1)


__all__ = ["edit_distance", "error_rate"]
