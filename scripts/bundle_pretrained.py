"""Bundle a trained run into the package as a pretrained model, and measure it as stored.

    python -m scripts.bundle_pretrained RUN --name digit --command "digitformer train ..."
    python -m scripts.bundle_pretrained RUN --name digit --partner [2] --command "..."
    python -m scripts.bundle_pretrained RUN --name digit --judge --command "..."   # then:
    python -m scripts.fit_novelty --model RUN --name digit.judge --keep 0.999

Writes src/digitformer/pretrained/NAME.safetensors (weights in fp16: half the size; the
model computes in fp32 once loaded) and updates pretrained/report.json with the test results
of exactly those stored weights (read once and with --tta, alone, and as `pretrained:NAME` reads
with its partners where it has them), the run, the command that trained
it and the commit it was trained at. --partner [N]: the run becomes NAME.partner[N].safetensors,
another reader that the bundled one asks where it is unsure (`readers.partners_of`). --judge:
the run becomes NAME.judge.safetensors, which says "not a digit" for NAME's whole pictures
(`readers.judge_of`; fit its own with `python -m scripts.fit_novelty --model RUN --name
NAME.judge --keep 0.999`; a digit reader's only). A new
`digit` reader's judges are fitted on its own features: refit them after bundling it
(`python -m scripts.fit_novelty`, "not a digit"; `python -m scripts.fit_pairs`, two digits).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from benchmarks.common import guard, machine
from safetensors.torch import save_file

from digitformer.inference.checkpoint import (
    PRETRAINED,
    PRETRAINED_DIR,
    partner_files,
    read_checkpoint,
)
from digitformer.inference.readers import READERS
from digitformer.training.evaluate import evaluate_checkpoint
from digitformer.utils.errors import DigitformerError
from digitformer.utils.fileio import atomic_path

REPORT = PRETRAINED_DIR / "report.json"
KEPT = (
    "accuracy",
    "sequence_accuracy",
    "digit_accuracy",
    "position_accuracy",
    "exact_match",
    "cer",
    "length_accuracy",
    "exact_by_length",
    "loss",
    "count",
)


def slot(text: str) -> int:
    """--partner's number: 1 (NAME.partner), 2 (NAME.partner2), ..."""
    number = int(text) if text.isdigit() else 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"a partner's number is 1 or more, not {text!r}")
    return number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder or checkpoint to bundle")
    parser.add_argument("--name", choices=list(PRETRAINED), required=True)
    parser.add_argument("--command", required=True, help="the command that trained the run")
    parser.add_argument("--commit", help="the commit it was trained at (default: HEAD)")
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--no-tta", dest="tta", action="store_false")
    role = parser.add_mutually_exclusive_group()
    role.add_argument(
        "--partner",
        type=slot,
        nargs="?",
        const=1,
        help="bundle as NAME's partner (another: --partner 2)",
    )
    role.add_argument(
        "--judge",
        action="store_true",
        help="bundle as NAME's judge apart, NAME.judge (then fit_novelty --name NAME.judge)",
    )
    args = parser.parse_args()
    if args.judge and args.name != "digit":
        raise DigitformerError("--judge: only the digit reader has a judge apart")
    weights, meta = read_checkpoint(args.run)
    task = READERS[args.name].task
    if meta.get("settings", {}).get("task") != task:
        raise DigitformerError(f"pretrained:{args.name} must be trained on {task}")
    half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    meta = {**meta, "stored_as": "float16", "history": meta.get("history", [])[-1:]}
    entry = args.name
    if args.partner is not None:  # NAME.partner, NAME.partner2, ...
        entry += ".partner" + (str(args.partner) if args.partner > 1 else "")
    elif args.judge:  # says "not a digit" for NAME's whole pictures; NAME reads as before
        entry += ".judge"
    target = PRETRAINED_DIR / f"{entry}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        save_file(half, str(tmp), metadata={"digitformer": json.dumps(meta)})
    commit = args.commit or subprocess.check_output(["git", "rev-parse", "HEAD"], text=True)
    reading: dict[str, dict] = {}
    together: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        # the stored weights alone: a copy outside the package has no partners to ask
        alone = Path(scratch) / target.name
        shutil.copyfile(target, alone)
        # a partner just written is found too; a judge reads nothing, so it has no "together"
        partnered = not args.judge and bool(
            partner_files(PRETRAINED_DIR / f"{args.name}.safetensors")
        )
        first = f"pretrained:{args.name}"
        for tta in (False, True) if args.tta else (False,):
            key = "tta" if tta else "once"
            result = evaluate_checkpoint(alone, "test", args.data_dir, tta=tta)
            reading[key] = {k: result[k] for k in KEPT if k in result}
            if partnered:  # what pretrained:NAME reads: the first reader and its partners
                result = evaluate_checkpoint(first, "test", args.data_dir, tta=tta)
                together[f"with its partners, {key}"] = {k: result[k] for k in KEPT if k in result}
    report = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
    report[entry] = {
        "model_type": meta["model_type"],
        "parameters": sum(v.numel() for v in weights.values()),
        "bytes": target.stat().st_size,
        "profile": meta["settings"].get("profile"),
        "epoch": meta.get("epoch"),
        "trained_by": args.command,
        "commit": commit.strip(),
        "source_run": str(args.run),
        "test": {**reading, **together},
        "measured_on": machine(),
        "torch": torch.__version__,
    }
    if args.partner is not None and args.name in report:  # the first reader's entry says it too
        report[args.name]["test"] = {
            k: v for k, v in report[args.name]["test"].items() if not k.startswith("with")
        } | together
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report[entry], indent=2))


if __name__ == "__main__":
    guard(main)
