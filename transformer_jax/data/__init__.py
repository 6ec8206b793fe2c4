"""Data layer: sources (SCAN offline, TFDS, local corpora, Python stdlib), SentencePiece, packed batches.

Entry point: :func:`build` (config fields: :func:`transformer_jax.data.config.default_config`). TensorFlow
(Datasets) is imported only by the ``tfds:`` sources and :mod:`transformer_jax.data.scan_tfds`, lazily.
"""

from transformer_jax.data.config import default_config
from transformer_jax.data.datasets import Datasets, build

__all__ = ["Datasets", "build", "default_config"]
