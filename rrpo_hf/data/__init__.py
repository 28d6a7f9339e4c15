"""Dataset schema helpers: the canonical emotion table and the collators of each stage.

The collators import torch; audio preparation lives in `rrpo_hf.data.audio` (imported on demand).
"""

from .labels import (
    CANONICAL_EMOTIONS,
    EMOTION_ALIASES,
    PAPER_EMOTIONS,
    UnknownEmotionError,
    emotion_label_maps,
    normalize_emotion,
    normalize_emotions,
)
from .collators import DataCollatorForEnergyAdaptiveMixup, DataCollatorForSpeechEmotion
from .speech_lm_collator import DataCollatorForCosyVoice2
from .diffro_collator import DataCollatorForDiffRO
