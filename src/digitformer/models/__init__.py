"""Models: the encoder-only ViT and the encoder-decoder, built from one set of layers."""

from digitformer.models.config import NUM_CLASSES, Seq2SeqConfig, ViTConfig
from digitformer.models.seq2seq import Seq2Seq
from digitformer.models.vit import ViT

MODEL_TYPES = {"encoder-only": (ViT, ViTConfig), "encoder-decoder": (Seq2Seq, Seq2SeqConfig)}


def build_model(model_type: str, config: dict | None = None):
    """Model of a type ("encoder-only" or "encoder-decoder") from a dict of config fields."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}; choose from {', '.join(MODEL_TYPES)}")
    model_cls, config_cls = MODEL_TYPES[model_type]
    return model_cls(config_cls.from_dict(config or {}))


def reader_kind(model) -> str:
    """What a model reads: "digit" (one 28x28 digit), "grid" (the four digits of a 2x2
    grid) or "number" (a number of any length, ended by the end token)."""
    if isinstance(model, ViT):
        return "digit"
    return "number" if model.cfg.end_token is not None else "grid"


def input_shape(model) -> tuple[int, int]:
    """The (height, width) of the images a model reads."""
    if isinstance(model, ViT):
        return model.cfg.image_size, model.cfg.image_size
    return model.cfg.image_size, model.cfg.width


__all__ = [
    "MODEL_TYPES",
    "NUM_CLASSES",
    "Seq2Seq",
    "Seq2SeqConfig",
    "ViT",
    "ViTConfig",
    "build_model",
    "input_shape",
    "reader_kind",
]
