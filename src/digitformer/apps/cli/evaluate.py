"""`digitformer eval CHECKPOINT`: metrics on the test or validation split."""

from __future__ import annotations

import json

from digitformer.apps.cli.common import computing
from digitformer.utils.errors import DigitformerError


def register(sub, shared) -> None:
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


def cmd_eval(args) -> int:
    from digitformer.training.evaluate import evaluate_checkpoint, format_report

    computing(args)
    paths = ([args.checkpoint] if args.checkpoint else []) + args.ensemble
    if not paths:
        raise DigitformerError("give a checkpoint, or --ensemble CKPT CKPT ...")
    target = paths if len(paths) > 1 else paths[0]
    result = evaluate_checkpoint(
        target, args.split, args.data_dir, args.device, args.beam, tta=args.tta, progress=True
    )
    print(json.dumps(result) if args.json else format_report(result))
    return 0
