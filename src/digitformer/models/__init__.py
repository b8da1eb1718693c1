"""Models: the encoder-only ViT and the encoder-decoder, built from one set of layers."""

from digitformer.models.config import NUM_CLASSES, Seq2SeqConfig, ViTConfig
from digitformer.models.seq2seq import Seq2Seq
from digitformer.models.vit import ViT

MODEL_TYPES: dict[str, tuple[type[ViT] | type[Seq2Seq], type[ViTConfig] | type[Seq2SeqConfig]]] = {
    "encoder-only": (ViT, ViTConfig),
    "encoder-decoder": (Seq2Seq, Seq2SeqConfig),
}


def build_model(model_type: str, config: dict | None = None):
    """Model of a type ("encoder-only" or "encoder-decoder") from a dict of config fields."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}; choose from {', '.join(MODEL_TYPES)}")
    model_cls, config_cls = MODEL_TYPES[model_type]
    return model_cls(config_cls.from_dict(config or {}))


__all__ = [
    "MODEL_TYPES",
    "NUM_CLASSES",
    "Seq2Seq",
    "Seq2SeqConfig",
    "ViT",
    "ViTConfig",
    "build_model",
]
