"""Dataset schema helpers: the canonical emotion table and the collators of each stage.

The collators import torch; audio preparation lives in `rrpo_hf.data.audio` (imported on demand).
"""

from .collators import DataCollatorForEnergyAdaptiveMixup, DataCollatorForSpeechEmotion
from .diffro_collator import DataCollatorForDiffRO
from .labels import (
    CANONICAL_EMOTIONS,
    EMOTION_ALIASES,
    PAPER_EMOTIONS,
    UnknownEmotionError,
    emotion_label_maps,
    normalize_emotion,
    normalize_emotions,
)
from .speech_lm_collator import DataCollatorForCosyVoice2
