"""`digitformer train TASK`: settings from defaults < profile < .env < flags, then the loop."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import fields

from digitformer.apps.cli.common import env_file, key_values, tasks
from digitformer.training.settings import TrainSettings
from digitformer.utils.errors import DigitformerError

FLAG_FIELDS = [f for f in fields(TrainSettings) if "flag" in f.metadata]


def _number(kind: type) -> Callable[[str], object]:
    """An argparse type that names a bad value briefly (never echoes 5000 digits back)."""

    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            shown = text if len(text) <= 20 else f"{text[:12]}... ({len(text)} characters)"
            noun = "whole number" if kind is int else "number"
            raise argparse.ArgumentTypeError(f"not a {noun}: {shown!r}") from None

    parse.__name__ = kind.__name__
    return parse


def register(sub, shared) -> None:
    p = sub.add_parser(
        "train",
        parents=[shared["threads"], shared["env"]],
        help="train a model",
        description="Train a model. Settings: defaults < --config profile < "
        ".env < flags. Checkpoints go to OUT_DIR/RUN/{last,best}.safetensors.",
    )
    p.add_argument("task", choices=tasks(), help="which model to train")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="settings as KEY=VALUE, like --set (the form W&B sweep agents pass)",
    )
    p.add_argument(
        "--config",
        default="default",
        help="profile name (default, original, best; encoder-only also fine; encoder-decoder "
        "also from-vit) or a YAML file (default: default)",
    )
    p.add_argument(
        "--name",
        "--run",
        dest="run",
        help="run name, the folder under out-dir (--run is the same flag; under torchrun "
        "use --name: torchrun takes --run for its own --run-path)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run where it stopped")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="print every setting, also those this task does not use (all are kept in the run)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --resume: continue even though settings that change the run differ",
    )
    p.add_argument(
        "--nproc",
        type=int,
        help="train with N processes on this machine (torchrun --standalone for you; one GPU "
        "each where there are GPUs)",
    )
    for f in FLAG_FIELDS:  # the plain settings flags, named, typed and explained by their field
        kind = _number(float) if f.type == "float" else _number(int) if f.type == "int" else str
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, help=f.metadata["flag"])
    p.add_argument(
        "--wandb",
        action="store_true",
        default=None,
        help="log to Weights & Biases (offline without an API key)",
    )
    p.add_argument(
        "--no-display",
        dest="display",
        action="store_false",
        default=None,
        help="skip the Braille validation samples after each epoch",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting, e.g. --set label_smoothing=0.1 --set model.dim=96",
    )
    p.set_defaults(func=cmd_train)


# Settings a task does not read (train --verbose prints them too): the generated images' counts
# and layout, and the numbers' own augmentation, mean nothing to a single-digit ViT.
NUMBERS_ONLY = ("layout", "aug_blur", "aug_eights")
UNUSED = {
    "encoder-only": ("train_grids", "val_grids", "test_grids", "init_encoder", *NUMBERS_ONLY),
    "encoder-decoder": NUMBERS_ONLY,
    "numbers": ("aug_lowres",),
}


def cmd_train(args) -> int:
    import yaml

    from digitformer.training.logger import export_wandb_env
    from digitformer.training.settings import env_settings, resolve_settings
    from digitformer.training.train import STATE_FILE, check_model_settings, run_folder, train
    from digitformer.utils.runtime import dist_env, end_worker

    if args.nproc is not None:
        return _launch(args.nproc, args.argv)
    main_process = dist_env().main  # under torchrun, rank 0 alone prints
    flags = {f.name: getattr(args, f.name) for f in FLAG_FIELDS}
    flags |= {"run": args.run, "threads": args.threads, "wandb": args.wandb}
    flags["display"] = args.display
    overrides = {k: v for k, v in flags.items() if v is not None}
    overrides.update(key_values([*args.overrides, *args.set]))
    dotenv = env_file(args.env_file)
    settings = resolve_settings(args.task, args.config, overrides, env_file=dotenv)
    export_wandb_env(dotenv)
    if args.force and not args.resume:
        raise DigitformerError("--force goes with --resume")
    check_model_settings(settings)  # mistakes first, before the settings fill the screen
    folder = run_folder(settings)
    if not args.resume and any((folder / f).exists() for f in (STATE_FILE, "last.safetensors")):
        raise DigitformerError(
            f"{folder} already holds a run: pass --resume to continue it, or --name NAME"
        )
    unread = sorted((set(overrides) | set(env_settings(dotenv))) & set(UNUSED.get(args.task, ())))
    if main_process and unread:  # set by the user, yet this task will not read them
        names = ", ".join(unread)
        print(f"warning: the {args.task} task does not read {names}: no effect", file=sys.stderr)
    if main_process:
        shown = settings.to_dict()
        if not args.verbose:
            shown = {k: v for k, v in shown.items() if k not in UNUSED.get(args.task, ())}
        text = yaml.safe_dump(shown, sort_keys=False).strip()
        print("settings:\n  " + text.replace("\n", "\n  "))
    summary = train(settings, resume=args.resume, force=args.force)
    if main_process:
        best, where = 100 * summary["best"], summary["run_dir"]
        print(f"done: best validation {best:.2f}%; checkpoints in {where}")
    if dist_env().active:
        end_worker(0)  # saved: skip the teardown where Gloo's threads can abort the process
    return 0


def _launch(nproc: int, argv: list[str]) -> int:
    """`train --nproc N`: the same command under torchrun, N processes on this machine."""
    import subprocess

    if nproc < 1:
        raise DigitformerError(f"--nproc must be at least 1, got {nproc}")
    rest, skip = [], False
    for token in argv:  # the command again, without --nproc N
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            rest.append(token)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*launcher, "--nproc_per_node", str(nproc), "-m", "digitformer", *rest]
    return subprocess.run(command).returncode
