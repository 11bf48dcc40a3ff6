"""glove-exp: configuration-driven text classification with frozen GloVe vectors (Haiku + JAX)."""

__version__ = "0.1.0"
