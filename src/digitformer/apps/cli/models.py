"""`digitformer models`: the bundled models and the local runs."""

from __future__ import annotations

import json

from digitformer.utils.defaults import RUNS_DIR


def register(sub, shared) -> None:
    p = sub.add_parser(
        "models",
        parents=[shared["json"]],
        help="list the bundled models and the runs in .data/models",
        description="The models every command can take as a checkpoint: the bundled ones "
        "(pretrained:digit, pretrained:grid, pretrained:number) with their test accuracy, "
        "and the training runs in RUNS_DIR with their best validation score.",
    )
    p.add_argument("--runs-dir", default=RUNS_DIR, help=f"default: {RUNS_DIR}")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    from digitformer.inference.reader import format_models, list_models

    rows = list_models(args.runs_dir)
    print(json.dumps(rows) if args.json else format_models(rows))
    return 0
