"""optforge: design and search memory-efficient optimizers for language-model training."""

__version__ = "0.1.0"
