"""Lowest-layer helpers shared by every part of the library (no imports of other rrpo_hf packages)."""

from .saving import (
    ConsistentSaveMixin,
    IncompleteCheckpointError,
    apply_default_mode,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    default_file_mode,
    recover_interrupted_save,
    save_folder_atomically,
)


__all__ = [
    "ConsistentSaveMixin",
    "IncompleteCheckpointError",
    "apply_default_mode",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "default_file_mode",
    "recover_interrupted_save",
    "save_folder_atomically",
]
