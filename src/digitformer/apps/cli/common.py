"""What the commands share: flags declared once (argparse parents) and small helpers."""

from __future__ import annotations

import argparse
import os

from digitformer.utils.defaults import DATA_DIR, ENV_FILE
from digitformer.utils.errors import DigitformerError


def parent(*args, **kwargs) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument(*args, **kwargs)
    return p


def shared_flags() -> dict[str, argparse.ArgumentParser]:
    """The flags several commands share, each declared once."""
    return {
        "device": parent("--device", default="auto", help="auto, cpu, cuda[:N] or mps"),
        "threads": parent("--threads", type=int, help="CPU threads (default: all cores)"),
        "data": parent("--data-dir", default=DATA_DIR, help=f"data folder (default: {DATA_DIR})"),
        "split": parent("--split", choices=("test", "val"), default="test"),
        "json": parent("--json", action="store_true", help="print JSON instead of a table"),
        "env": parent(
            "--env-file",
            help=f"dotenv file to read (default: {ENV_FILE} if there is one; none: no file)",
        ),
    }


def computing(args) -> None:
    """Apply --threads for the commands that compute."""
    from digitformer.utils.runtime import configure_threads

    configure_threads(getattr(args, "threads", None))


def env_file(given: str | None) -> str | None:
    """The dotenv file to read: the default .env when there is one, a named file that must
    exist, or none at all (`--env-file none`)."""
    if given is None:
        return ENV_FILE
    if given.lower() == "none":
        return None
    if not os.path.isfile(given):
        raise DigitformerError(f"--env-file {given}: no such file")
    return given


def key_values(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DigitformerError(f"settings are KEY=VALUE, got {item!r}")
        pairs[key.strip()] = value
    return pairs


def tasks() -> list[str]:
    """The task names, from the packaged profiles (every task has a `<task>-default.yaml`):
    building the parser must not import torch, which the training registry does
    (tests/test_cli.py checks that the two agree)."""
    from digitformer.training.settings import PROFILE_DIR

    return sorted(p.name.removesuffix("-default.yaml") for p in PROFILE_DIR.glob("*-default.yaml"))
