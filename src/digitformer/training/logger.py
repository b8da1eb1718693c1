"""Run logging behind one small interface: the console always, Weights & Biases when asked."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


class Logger:
    """Prints lines; forwards scalar metrics to W&B when enabled (offline without an API key)."""

    def __init__(
        self,
        *,
        wandb: bool = False,
        project: str = "digitformer",
        run_name: str = "",
        config: dict | None = None,
        group: str | None = None,
        stream=None,
    ) -> None:
        self.stream = stream or sys.stdout
        self.run = None
        if wandb:
            self.run = _start_wandb(project, run_name, config or {}, group, self.print)

    def print(self, line: str = "") -> None:
        print(line, file=self.stream, flush=True)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(
                {k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step
            )

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def export_wandb_env(env_file: str | Path | None) -> None:
    """W&B reads its own WANDB_* variables: pass those from a .env file on (the environment
    wins), so a key or mode kept in .env reaches wandb.init."""
    from dotenv import dotenv_values

    if env_file and Path(env_file).is_file():
        for key, value in dotenv_values(env_file).items():
            if key.startswith("WANDB_") and value is not None:
                os.environ.setdefault(key, value)


def _start_wandb(project: str, name: str, config: dict, group: str | None, say):
    try:
        import wandb
    except ImportError:
        say("wandb is not installed (pip install wandb): logging to the console only")
        return None
    has_key = bool(os.environ.get("WANDB_API_KEY")) or os.path.exists(
        os.path.expanduser("~/.netrc")
    )
    mode = os.environ.get("WANDB_MODE") or ("online" if has_key else "offline")
    try:
        return wandb.init(project=project, name=name or None, config=config, group=group, mode=mode)
    except Exception as exc:  # a broken network or account must never stop training
        say(f"W&B could not start ({exc}): logging to the console only")
        return None
