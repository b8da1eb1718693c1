"""Self-describing checkpoints: safetensors weights with the model config and run metadata
inside the same file (so weights and description can never disagree), plus a JSON copy of the
metadata for people and tools. Never pickle: loading a pickle runs code.

    model, meta = load_model(".data/models/encoder-only-default")   # best.safetensors there
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.overrides import TorchFunctionMode

from digitformer.inference.readers import READERS
from digitformer.models import MODEL_TYPES, build_model
from digitformer.utils.errors import DigitformerError
from digitformer.utils.fileio import atomic_path, write_text_atomic

FORMAT = "digitformer-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write `path` (.safetensors) atomically, and `path` with .json beside it."""
    path = Path(path).with_suffix(".safetensors")
    meta = {"format": FORMAT, "version": VERSION, **meta}
    text = json.dumps(meta, indent=2, default=_jsonable)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(weights, str(tmp), metadata={"digitformer": text})
    write_text_atomic(path.with_suffix(".json"), text + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


CHECKPOINT_FILES = ("best.safetensors", "last.safetensors")  # what a run folder holds
PRETRAINED_DIR = Path(__file__).parents[1] / "pretrained"  # package data: the bundled models
PRETRAINED = tuple(READERS)  # one bundled model of each kind: pretrained:digit, ...


def resolve_path(path: str | Path) -> Path:
    """Where a checkpoint is: `pretrained:digit` or `pretrained:grid` (the bundled models),
    `hf://owner/repo[/file.safetensors]` (downloaded from the Hugging Face Hub), a run folder
    (its best, else last, checkpoint), a .safetensors file or its .json."""
    text = str(path)
    if text.startswith("pretrained:"):
        return pretrained_path(text.removeprefix("pretrained:"))
    if text.startswith("hf://"):
        return _from_hub(text.removeprefix("hf://"))
    path = Path(path)
    if path.is_dir():
        for name in CHECKPOINT_FILES:
            if (path / name).is_file():
                return path / name
        raise DigitformerError(f"no checkpoint (best/last.safetensors) in {path}")
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise DigitformerError(f"checkpoint not found: {path}")
    return path


def pretrained_path(name: str) -> Path:
    if name not in PRETRAINED:
        choices = ", ".join(f"pretrained:{n}" for n in PRETRAINED)
        raise DigitformerError(f"no bundled model {name!r}; choose from {choices}")
    path = PRETRAINED_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise DigitformerError(
            f"pretrained:{name} is not bundled with this installation: give a run folder or "
            "checkpoint instead"
        )
    return path


def _from_hub(spec: str) -> Path:
    """owner/repo or owner/repo/path/in/repo.safetensors -> the downloaded file."""
    from digitformer.utils.hub import download

    parts = spec.strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise DigitformerError(f"hf://{spec}: give hf://owner/repo[/file.safetensors]")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:]) or "best.safetensors"
    return download(repo, filename)


# Names that older checkpoints gave their tensors: the ViT's blocks, now called its encoder as
# the encoder-decoder's are.
LEGACY_PREFIXES = {"blocks.": "encoder."}


def current_name(name: str) -> str:
    """A tensor's name in today's models, whatever version of the code wrote it."""
    for old, new in LEGACY_PREFIXES.items():
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def read_meta(path: str | Path) -> tuple[Path, dict[str, Any], dict[str, tuple[int, ...]]]:
    """A checkpoint's path, its checked metadata and the shapes of its tensors, read from the
    file's header alone: nothing is allocated for the weights yet."""
    path = resolve_path(path)
    try:
        with safe_open(str(path), "pt") as fh:
            raw_meta = (fh.metadata() or {}).get("digitformer")
            shapes = {current_name(n): tuple(fh.get_slice(n).get_shape()) for n in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise DigitformerError(f"{path}: not a valid checkpoint ({exc})") from None
    if raw_meta is None:
        raise DigitformerError(f"{path}: a safetensors file, but not a digitformer checkpoint")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError:
        raise DigitformerError(f"{path}: checkpoint metadata is corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DigitformerError(f"{path}: not a digitformer checkpoint")
    if not isinstance(meta.get("model_type"), str) or meta["model_type"] not in MODEL_TYPES:
        raise DigitformerError(f"{path}: unknown model type {meta.get('model_type')!r}")
    if not isinstance(meta.get("model_config"), dict):
        raise DigitformerError(f"{path}: the checkpoint's model config is not a mapping")
    return path, meta, shapes


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path, meta, _ = read_meta(path)
    return _weights(path), meta


def _weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return {current_name(k): v for k, v in load_file(str(path)).items()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DigitformerError(f"{path}: not a valid checkpoint ({exc})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes, with its weights, in eval mode.

    A checkpoint is untrusted input: its metadata is type-checked, and the model it declares
    is first built on the meta device (no memory) and its tensor shapes compared with the
    file's header, so a small file declaring a huge model is refused before anything is
    allocated."""
    path, meta, shapes = read_meta(path)
    try:
        with torch.device("meta"), _NoRandomInit():
            skeleton = build_model(meta["model_type"], meta["model_config"])
    except (TypeError, ValueError) as exc:
        raise DigitformerError(f"{path}: invalid model config ({exc})") from None
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    if expected != shapes:
        differ = sorted(set(expected) ^ set(shapes)) or sorted(
            name for name in expected if expected[name] != shapes[name]
        )
        raise DigitformerError(
            f"{path}: checkpoint does not match its model (tensors differ: {', '.join(differ[:3])})"
        )
    weights = _weights(path)  # the path and header are read already
    model = build_model(meta["model_type"], meta["model_config"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise DigitformerError(f"{path}: checkpoint does not match its model ({exc})") from None
    model = model.to(device).eval()
    novelty = path.with_suffix(".novelty.safetensors")
    if path.parent == PRETRAINED_DIR and novelty.is_file():  # the bundled digit reader's
        from digitformer.inference.novelty import Novelty

        model.novelty = Novelty.load(novelty)  # says when a mark is no digit at all
    pairs = path.with_suffix(".pairs.safetensors")
    if path.parent == PRETRAINED_DIR and pairs.is_file():  # says when a narrow piece is two
        from digitformer.inference.pairs import Pairs

        model.pairs = Pairs.load(pairs)
    partners = partner_files(path)
    if partners:  # other digit readers, loaded when first needed (readers.partners_of)
        model.partner_paths = partners
    judge = path.with_suffix(".judge.safetensors")
    if path.parent == PRETRAINED_DIR and judge.is_file():  # "not a digit" for single pictures
        model.judge_path = judge  # loaded when first needed (readers.judge_of)
    return model, meta


def partner_files(path: Path) -> list[Path]:
    """A bundled model's partners beside it: NAME.partner.safetensors, NAME.partner2..., in
    their numbers' order (none for a checkpoint outside the package, or for a partner)."""
    if path.parent != PRETRAINED_DIR:
        return []
    pattern = re.compile(rf"{re.escape(path.stem)}\.partner(\d*)\.safetensors")
    found = [(int(m[1] or 1), f) for f in path.parent.iterdir() if (m := pattern.fullmatch(f.name))]
    return [f for _, f in sorted(found)]


class _NoRandomInit(TorchFunctionMode):
    """A skeleton built without its random fills (its shapes are all it is for). On the meta
    device `normal_` (nn.Embedding's) goes through `torch._refs`, which imports TorchDynamo:
    0.9 s of the start of every process that loads a numbers reader; `torch.randn` (a
    numbers model's memory positions) imports SymPy through it: 0.43 s more."""

    SKIPPED: frozenset = frozenset(
        (torch.Tensor.normal_, torch.Tensor.uniform_, nn.init.normal_, nn.init.uniform_)
        + (nn.init.trunc_normal_, nn.init.kaiming_uniform_, nn.init.xavier_uniform_)
    )
    EMPTY: frozenset = frozenset((torch.randn, torch.rand))  # made empty, not filled

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.SKIPPED:
            return args[0] if args else (kwargs or {})["tensor"]  # filled in place: itself
        if func in self.EMPTY:
            return torch.empty(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


# ---- training state for --resume ---------------------------------------------------------
# One file holds everything a resumed run needs: the model's weights ("model/..."), the
# optimizer's tensors ("optim/..."), and in its metadata the optimizer's scalars, the epoch,
# step, best score and the checkpoint metadata (settings, history). Written first each epoch,
# atomically, it is the epoch's commit point: whatever is interrupted after it (last, best),
# the run resumes from a consistent epoch.

STATE_VERSION = 2


def save_train_state(
    path: str | Path,
    model: nn.Module,
    optimizer: Any,
    info: dict[str, Any],
    averaged: nn.Module | None = None,
) -> None:
    """Weights, optimizer state and `info` in one file; `averaged` (the moving average of the
    weights, when the run keeps one) beside them."""
    state = optimizer.state_dict()
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if averaged is not None:
        tensors |= {
            f"ema/{k}": v.detach().cpu().contiguous() for k, v in averaged.state_dict().items()
        }
    scalars = {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"optim/{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    info = {
        "version": STATE_VERSION,
        "param_groups": state["param_groups"],
        "scalars": scalars,
        **info,
    }
    text = json.dumps(info, default=_jsonable)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"digitformer_state": text})


def _section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The weights saved under `prefix` in a training state, by their current names."""
    return {current_name(k[len(prefix) :]): v for k, v in tensors.items() if k.startswith(prefix)}


def load_train_state(
    path: str | Path,
    model: nn.Module,
    optimizer: Any,
    averaged: nn.Module | None = None,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Restore the model, the optimizer and the weights' average (when given and saved) from
    `path`; return the rest (epoch, step, best, meta). `check(info)` runs first and may refuse
    the state before anything is restored. States written before version 2 hold no weights:
    those come from `last`."""
    path = Path(path)
    if not path.is_file():
        raise DigitformerError(f"cannot resume: no training state at {path}")
    try:
        with safe_open(str(path), "pt") as fh:
            info = json.loads(fh.metadata()["digitformer_state"])
        tensors = load_file(str(path))
        if not isinstance(info, dict):
            raise ValueError("metadata is not a mapping")
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as exc:
        raise DigitformerError(f"{path}: training state is corrupt ({exc})") from None
    average = {
        current_name(k[len("ema/") :]): v for k, v in tensors.items() if k.startswith("ema/")
    }
    if info.get("version") == STATE_VERSION:
        weights = {
            current_name(k[len("model/") :]): v
            for k, v in tensors.items()
            if k.startswith("model/")
        }
        tensors = {k[len("optim/") :]: v for k, v in tensors.items() if k.startswith("optim/")}
    else:  # version 1: the weights are in last.safetensors beside it
        weights, meta = read_checkpoint(path.with_name("last.safetensors"))
        if meta.get("step") != info.get("step"):
            raise DigitformerError(f"cannot resume {path.parent}: weights and state disagree")
        info["meta"] = meta
    if check is not None:
        check(info)
    try:
        model.load_state_dict(weights)
        if averaged is not None and average:  # none saved: the average starts from here
            averaged.load_state_dict(average)
        state: dict[int, dict[str, Any]] = {}
        for name, value in {**tensors, **info.pop("scalars")}.items():
            index, key = name.split(".", 1)
            state.setdefault(int(index), {})[key] = value
        optimizer.load_state_dict({"state": state, "param_groups": info.pop("param_groups")})
    except (RuntimeError, ValueError, KeyError) as exc:
        message = f"cannot resume from {path}: it does not fit this model ({exc})"
        raise DigitformerError(message) from None
    return info
