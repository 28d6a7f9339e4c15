"""rrpo-hf: Robust Reward Policy Optimization for LLM-based emotional TTS on the Hugging Face stack."""

__version__ = "0.1.0"
