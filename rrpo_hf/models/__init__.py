"""Model families of rrpo-hf. Importing this package registers every model with the transformers Auto classes."""

from .cosyvoice2 import CosyVoice2LM, CosyVoice2LMConfig, CosyVoice2LMOutput  # noqa: E402,F401
from .cosyvoice3 import CosyVoice3LM, CosyVoice3LMConfig  # noqa: E402,F401
from .robust_ser import RobustSERConfig, RobustSERForAudioClassification, RobustSEROutput  # noqa: F401
