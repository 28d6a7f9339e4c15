from setuptools import find_packages, setup

setup(
    name="rrpo-hf",
    version="0.1.0",
    description="Robust Reward Policy Optimization (RRPO) for LLM-based emotional TTS, on the Hugging Face stack",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["rrpo_hf", "rrpo_hf.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0",
        "datasets>=3.0",
        "accelerate>=1.0",
        "peft>=0.17",
        "trl>=1.0",
        "evaluate>=0.4",
        "scikit-learn",
        "scipy",
        "numpy",
        "pyyaml",
        "tqdm",
    ],
    extras_require={
        "deepspeed": ["deepspeed>=0.16"],
        # DNSMOS (speechmos) imports librosa and onnxruntime without declaring them.
        "audio": ["soundfile", "soxr", "speechmos", "librosa", "onnxruntime"],
        # Kept apart from `audio`: s3tokenizer pulls a CUDA torchaudio build, which fails to import on
        # CPU-only machines and makes transformers' `is_torchaudio_available()` report True regardless.
        "s3": ["s3tokenizer"],
        "plots": ["matplotlib"],
        "dev": ["pytest", "pytest-timeout"],
    },
)
