"""digitformer: Vision Transformers on handwritten digits."""

__version__ = "0.1.0"
