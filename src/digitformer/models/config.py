"""Model configurations: every architectural choice is a field, checked on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

from digitformer.models.layers import ACTIVATIONS, NORMS

NUM_CLASSES = 10  # the digits 0-9: every head, loss and metric has ten classes
# Fields older checkpoints stored that are no longer options, with the only value they took.
FIXED_FIELDS = {"num_classes": NUM_CLASSES, "num_digits": 4}  # num_digits: now max_digits
FIELD_KINDS: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "float": (int, float),
    "str": str,
}  # what each field's type accepts


# The largest a field may be: far beyond any model of this project, and small enough that a
# checkpoint, a profile or DIGITFORMER_MODEL_DEPTH=100000000 is refused before anything is
# built (even on the meta device, 10^8 modules would fill the memory).
LIMITS = {
    "dim": 4096,
    "heads": 64,
    "ff_dim": 16384,
    "depth": 64,
    "enc_depth": 64,
    "dec_depth": 64,
    "image_size": 1024,
    "image_width": 4096,
    "stem": 1024,
}


def _check_common(cfg) -> None:
    for name, most in LIMITS.items():
        value = getattr(cfg, name, None)
        if value is not None and value > most:
            raise ValueError(f"{name} must be at most {most}, got {value}")
    if cfg.dim <= 0 or cfg.heads <= 0 or cfg.ff_dim <= 0:
        raise ValueError("dim, heads and ff_dim must be positive")
    if cfg.dim % cfg.heads:
        raise ValueError(f"heads ({cfg.heads}) must divide dim ({cfg.dim})")
    if cfg.norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {cfg.norm!r}")
    if cfg.activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {cfg.activation!r}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if not 0.0 <= cfg.drop_path < 1.0:
        raise ValueError(f"drop_path must be in [0, 1), got {cfg.drop_path}")
    if cfg.stem < 0:
        raise ValueError(f"stem (convolution channels, 0 for none) must be >= 0, got {cfg.stem}")


class _Config:
    if TYPE_CHECKING:  # what every config dataclass has (for the type checker only)
        __dataclass_fields__: ClassVar[dict[str, Any]]
        dim: int
        heads: int
        ff_dim: int
        dropout: float
        norm: str
        activation: str

    def to_dict(self) -> dict:
        return asdict(self)

    def block_args(self) -> dict:
        """The keyword arguments every `Block` of this model shares."""
        return dict(
            dim=self.dim,
            heads=self.heads,
            ff_dim=self.ff_dim,
            dropout=self.dropout,
            norm=self.norm,
            activation=self.activation,
        )

    @classmethod
    def from_dict(cls, values: dict):
        values = dict(values)
        for name, only in FIXED_FIELDS.items():
            if name in values and values.pop(name) != only:
                raise ValueError(f"{name} can only be {only}")
        kinds: dict[str, Any] = {f.name: f.type for f in fields(cls)}  # types as strings
        unknown = set(values) - set(kinds)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
        for name, value in values.items():
            if not isinstance(value, FIELD_KINDS[kinds[name]]) or isinstance(value, bool):
                raise ValueError(f"{name} must be {kinds[name]}, got {value!r}")
        return cls(**values)


@dataclass(frozen=True)
class ViTConfig(_Config):
    """Encoder-only ViT for one 28x28 digit. Defaults are the original's architecture."""

    image_size: int = 28
    patch_size: int = 4
    dim: int = 128
    depth: int = 4
    heads: int = 4
    ff_dim: int = 512
    dropout: float = 0.1
    drop_path: float = 0.0  # stochastic depth of the last block; earlier blocks get less
    norm: str = "post"
    activation: str = "relu"
    stem: int = 0  # channels of a 3x3 convolutional stem before the patches; 0: none

    def __post_init__(self) -> None:
        _check_common(self)
        if self.patch_size <= 0 or self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size ({self.patch_size}) must divide the image size ({self.image_size})"
            )
        if self.depth < 1:
            raise ValueError("depth must be at least 1")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class Seq2SeqConfig(_Config):
    """Encoder-decoder that reads digits from an image. Defaults are the original's: the four
    digits of a 56x56 2x2 grid. `max_digits` and `ending="end"` make it read numbers of any
    length up to max_digits, ended by an end token, from an image_size x image_width canvas."""

    image_size: int = 56  # the image's height (and its width unless image_width is set)
    image_width: int = 0  # 0: square
    max_digits: int = 4
    ending: str = "fixed"  # "fixed": always max_digits digits; "end": an end token stops it
    patch_size: int = 7
    dim: int = 128
    enc_depth: int = 6
    dec_depth: int = 6
    heads: int = 4
    ff_dim: int = 512
    dropout: float = 0.1
    drop_path: float = 0.0  # stochastic depth of each stack's last block; earlier ones get less
    norm: str = "post"
    activation: str = "relu"
    memory: str = "quadrants"  # "quadrants": 4 pooled tokens; "patches": all encoder tokens
    attention: str = "global"  # encoder attention: "global" (all patches) or "quadrant"
    stem: int = 0  # channels of a 3x3 convolutional stem, run on each quadrant; 0: none
    # Encoder self-attention within this many patch columns each side (0: the whole image): a
    # digit's patches then see their neighbourhood, as in the 28x28 frame a ViT was trained on.
    window: int = 0

    def __post_init__(self) -> None:
        _check_common(self)
        if self.ending not in ("fixed", "end"):
            raise ValueError(f"ending must be 'fixed' or 'end', got {self.ending!r}")
        if not 1 <= self.max_digits <= 64:
            raise ValueError(f"max_digits must be 1 to 64, got {self.max_digits}")
        if self.image_size <= 0 or self.image_width < 0:
            raise ValueError("image_size must be positive and image_width >= 0")
        if (
            self.patch_size <= 0
            or self.image_size % self.patch_size
            or self.width % self.patch_size
        ):
            raise ValueError(
                f"patch_size ({self.patch_size}) must divide the image's height and width "
                f"({self.image_size}, {self.width})"
            )
        two_by_two = self.memory == "quadrants" or self.attention == "quadrant"
        if two_by_two and not self.is_2x2:
            raise ValueError(
                "memory='quadrants' and attention='quadrant' are for the 2x2 grid: a square "
                "image, max_digits 4, ending 'fixed'"
            )
        if self.is_2x2 and (self.image_size // 2) % self.patch_size:
            raise ValueError(
                f"patch_size ({self.patch_size}) must divide the quadrant size "
                f"({self.image_size // 2}) so that patches never straddle two digits"
            )
        if self.memory not in ("quadrants", "patches"):
            raise ValueError(f"memory must be 'quadrants' or 'patches', got {self.memory!r}")
        if self.attention not in ("global", "quadrant"):
            raise ValueError(f"attention must be 'global' or 'quadrant', got {self.attention!r}")
        if self.window < 0 or (self.window and self.attention != "global"):
            raise ValueError("window must be >= 0, and is for global attention only")
        if self.enc_depth < 1 or self.dec_depth < 1:
            raise ValueError("enc_depth and dec_depth must be at least 1")

    @property
    def width(self) -> int:
        return self.image_width or self.image_size

    @property
    def is_2x2(self) -> bool:
        """The original task: four digits of a square 2x2 grid, always four."""
        return (
            self.width == self.image_size
            and self.image_size % 2 == 0
            and self.max_digits == 4
            and self.ending == "fixed"
        )

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Patches down and across: T = rows * cols encoder tokens."""
        return self.image_size // self.patch_size, self.width // self.patch_size

    @property
    def patch_side(self) -> int:
        """Patches along each side of a square image."""
        return self.image_size // self.patch_size

    @property
    def steps(self) -> int:
        """Decoding steps: the digits, and the end token when there is one."""
        return self.max_digits + (self.ending == "end")

    @property
    def vocab(self) -> int:
        """What the head can write: the ten digits, and the end token (10) when there is one."""
        return NUM_CLASSES + (self.ending == "end")

    @property
    def start_token(self) -> int:
        return NUM_CLASSES  # token 10: the decoder's start symbol

    @property
    def end_token(self) -> int | None:
        """Token 10 also ends a number: the head's eleventh class (None: fixed length)."""
        return NUM_CLASSES if self.ending == "end" else None
