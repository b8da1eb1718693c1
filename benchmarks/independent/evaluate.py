"""Read the independent suite with digitformer's readers and print one table.

    python -m benchmarks.independent.evaluate --reader both --count 150 --seed 1 --json OUT.json

Rows: each number set read by the number reader; each single-digit set read by the digit reader
(and by the number reader); and the "digit by digit" baseline: every number line cut into its
true digit boxes (the generator's ground truth), each crop read by the digit reader, the reads
joined - what reading one digit at a time could reach with perfect segmentation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from benchmarks.common import bundled  # noqa: E402
from benchmarks.independent.numbers import (  # noqa: E402
    DIGIT_SETS,
    NUMBER_SETS,
    Item,
    Sources,
    build_suite,
)

BATCH = 64
MAX_LEN = 12


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def read_all(reader, images: list[np.ndarray]) -> list[tuple[str | None, str | None, bool]]:
    """(digits or None, reason, flagged low-confidence) per picture; a picture the reader
    refuses outright (raises) counts as refused."""
    from digitformer.utils.errors import DigitformerError

    out = []
    for start in range(0, len(images), BATCH):
        chunk = images[start : start + BATCH]
        try:
            results = reader.predict(chunk)
            out += [(r.digits, r.reason, r.low_confidence) for r in results]
        except DigitformerError:
            for image in chunk:  # find the one it refuses, read the others
                try:
                    r = reader.predict([image])[0]
                    out.append((r.digits, r.reason, r.low_confidence))
                except DigitformerError as err:
                    out.append((None, f"error: {err}", False))
    return out


class InPieces:
    """The number and digit readers reading each picture in pieces, as `Reader.predict` does."""

    def __init__(self, number, digit) -> None:
        self.number, self.digit = number, digit

    def predict(self, images):
        from digitformer.inference.pieces import read_in_pieces
        from digitformer.inference.reader import _pixels
        from digitformer.utils.errors import DigitformerError

        names = [f"image {i}" for i in range(len(images))]
        pictures = [_pixels(image, name) for image, name in zip(images, names)]
        readings = read_in_pieces(self.number.model, self.digit.model, pictures, names)
        if readings.errors:
            raise DigitformerError(readings.errors[0])
        return readings.results


def crops(item: Item) -> list[np.ndarray]:
    """The item's digits cut out along their true boxes (plus 2% of the digit's height across,
    5% up and down), each set on a margin of a quarter of its height filled with the crop's
    paper colour (the median of its border), so that a digit does not fill its picture."""
    h, w = item.image.shape[:2]
    pieces = []
    for x0, y0, x1, y1 in item.boxes:
        size = y1 - y0
        mx, my, pad = round(0.02 * size), round(0.05 * size), max(2, round(0.25 * size))
        cut = item.image[max(0, y0 - my) : min(h, y1 + my), max(0, x0 - mx) : min(w, x1 + mx)]
        border = np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]])
        paper = np.median(border, axis=0).astype(cut.dtype)
        piece = np.empty(
            (cut.shape[0] + 2 * pad, cut.shape[1] + 2 * pad, *cut.shape[2:]), cut.dtype
        )
        piece[...] = paper
        piece[pad : pad + cut.shape[0], pad : pad + cut.shape[1]] = cut
        pieces.append(piece)
    return pieces


def digit_by_digit(reader, items: list[Item]) -> list[tuple[str | None, str | None, bool]]:
    pieces, owner = [], []
    for i, item in enumerate(items):
        for piece in crops(item):
            pieces.append(piece)
            owner.append(i)
    reads = read_all(reader, pieces)
    joined: list[list] = [[] for _ in items]
    flagged = [False] * len(items)
    for i, (digits, _, low) in zip(owner, reads):
        joined[i].append(digits)
        flagged[i] |= low
    out = []
    for parts, low in zip(joined, flagged):
        if any(p is None for p in parts):
            out.append((None, "a digit was refused", False))
        else:
            out.append(("".join(parts), None, low))
    return out


def _share(flags) -> float | None:
    flags = list(flags)
    return float(np.mean(flags)) if flags else None


def score(set_name: str, reader_name: str, items: list[Item], reads, seconds: float) -> dict:
    rows = []
    for item, (digits, reason, *flag) in zip(items, reads):
        rows.append(
            {
                "label": item.label,
                "read": digits,
                "reason": reason,
                "flagged": bool(flag and flag[0]),
                "length": item.length,
                "touching": item.touching,
                "ink_touching": item.ink_touching,
                "photo": item.photo,
                "source": item.source,
                "kind": item.kind,
                "correct": digits is None if item.label is None else digits == item.label,
            }
        )
    result = {
        "set": set_name,
        "reader": reader_name,
        "n": len(rows),
        "accuracy": _share(r["correct"] for r in rows),
        "refused": _share(r["read"] is None for r in rows),
        "seconds": round(seconds, 2),
    }
    if items and items[0].label is not None:
        by_len = defaultdict(list)
        for r in rows:
            by_len[r["length"]].append(r["correct"])
        result["by_length"] = {
            str(k): [float(np.mean(v)), len(v)] for k, v in sorted(by_len.items())
        }
        touching = [r["correct"] for r in rows if r["touching"]]
        apart = [r["correct"] for r in rows if not r["touching"]]
        result["touching"] = [_share(touching), len(touching)]
        # the doubtful flag (low_confidence): the share of wrong readings it catches, and of
        # right ones it flags needlessly
        wrong = [r["flagged"] for r in rows if r["read"] is not None and not r["correct"]]
        right = [r["flagged"] for r in rows if r["correct"]]
        result["flag_catches"] = [_share(wrong), len(wrong)]
        result["flag_false_alarms"] = [_share(right), len(right)]
        result["apart"] = [_share(apart), len(apart)]
        ink = [r["correct"] for r in rows if r["ink_touching"]]
        result["ink_touching"] = [_share(ink), len(ink)]
        result["wrong_length"] = _share(
            r["read"] is not None and len(r["read"]) != r["length"] for r in rows
        )
        result["too_short"] = _share(
            r["read"] is not None and len(r["read"]) < r["length"] for r in rows
        )
        result["too_long"] = _share(
            r["read"] is not None and len(r["read"]) > r["length"] for r in rows
        )
        photo = [r["correct"] for r in rows if r["photo"]]
        clean = [r["correct"] for r in rows if not r["photo"]]
        result["photo"] = [_share(photo), len(photo)]
        result["clean"] = [_share(clean), len(clean)]
        by_source = defaultdict(list)
        for r in rows:
            by_source[r["source"]].append(r["correct"])
        result["by_source"] = {k: [float(np.mean(v)), len(v)] for k, v in by_source.items()}
    else:
        by_kind = defaultdict(list)
        for r in rows:
            by_kind[r["kind"]].append(r["correct"])
        result["refused_by_kind"] = {k: [float(np.mean(v)), len(v)] for k, v in by_kind.items()}
        reads_as = defaultdict(int)
        for r in rows:
            if r["read"] is not None:
                reads_as[r["read"]] += 1
        result["read_as"] = dict(sorted(reads_as.items(), key=lambda kv: -kv[1]))
    result["errors"] = [
        {
            k: r[k]
            for k in ("label", "read", "reason", "length", "touching", "photo", "source", "kind")
        }
        for r in rows
        if not r["correct"]
    ]
    return result


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def table(results: list[dict]) -> str:
    head = ["set", "reader", "n", "acc"] + [f"L{k}" for k in range(1, MAX_LEN + 1)]
    head += ["touch", "apart", "wrongLen", "refused", "flag:wrong", "flag:right"]
    lines = []
    for r in results:
        by_len = r.get("by_length", {})
        cells = [r["set"], r["reader"], str(r["n"]), _pct(r["accuracy"])]
        cells += [
            _pct(by_len[str(k)][0]) if str(k) in by_len else "" for k in range(1, MAX_LEN + 1)
        ]
        if "touching" in r and r["set"] in NUMBER_SETS:
            cells += [_pct(r["touching"][0]), _pct(r["apart"][0]), _pct(r["wrong_length"])]
        else:
            cells += ["", "", ""]
        cells.append(_pct(r["refused"]))
        cells += [_pct(r[k][0]) if k in r else "" for k in ("flag_catches", "flag_false_alarms")]
        lines.append(cells)
    widths = [max(len(c) for c in col) for col in zip(head, *lines)]
    fmt = lambda cells: (
        "| "
        + " | ".join(  # noqa: E731
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )
        + " |"
    )
    rule = (
        "|"
        + "|".join("-" * (w + 2) if i < 2 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([fmt(head), rule] + [fmt(c) for c in lines])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--reader",
        choices=["number", "digit", "both", "pieces"],
        default="both",
        help="pieces: the number reader against reading in pieces (digitformer.inference."
        "pieces: cut at empty columns, lone digits by the digit reader), number sets only",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=150,
        help="items per length band (2 lengths); digit sets get 2x, not-digit 1x",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="read with this model instead of the bundled one (the number reader; "
        "the digit reader with --reader digit)",
    )
    parser.add_argument(
        "--digit-checkpoint",
        default=None,
        help="with --reader both: a digit model instead of the bundled one",
    )
    parser.add_argument(
        "--mnist",
        type=Path,
        default=None,
        help="folder with the MNIST test-*.parquet (default: .data/ylecun/mnist)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--no-novelty",
        action="store_true",
        help="the digit reader without its 'not a digit' test (digitformer.inference.novelty)",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="the number reader averaged over test-time views (the line moved a pixel each "
        "way: digitformer.inference.ensemble), alone and in pieces",
    )
    parser.add_argument(
        "--no-cuts",
        action="store_true",
        help="in pieces: clusters read by the numbers model alone, not re-read by the digit "
        "reader cut into as many digits (digitformer.inference.cuts)",
    )
    args = parser.parse_args(argv)

    import torch

    import digitformer

    torch.set_num_threads(1)
    wall = time.perf_counter()
    t = time.perf_counter()
    sources = Sources(mnist_dir=args.mnist)
    suite = build_suite(sources, count=args.count, seed=args.seed)
    build_s = time.perf_counter() - t
    sizes = ", ".join(f"{k} {len(v)}" for k, v in suite.items())
    print(f"built the suite in {build_s:.1f} s (seed {args.seed}): {sizes}", flush=True)

    number_src = args.checkpoint or "number"
    digit_src = (args.checkpoint if args.reader == "digit" else args.digit_checkpoint) or "digit"
    results = []

    def run(set_name, reader_name, reader, items, how):
        t0 = time.perf_counter()
        reads = how(reader, items)
        r = score(set_name, reader_name, items, reads, time.perf_counter() - t0)
        results.append(r)
        print(
            f"  {set_name:<22} {reader_name:<15} acc {_pct(r['accuracy']):>5}%  "
            f"({r['seconds']:.0f} s)",
            flush=True,
        )

    whole = lambda reader, items: read_all(reader, [it.image for it in items])  # noqa: E731

    def load_number():
        reader = digitformer.load(number_src, device=args.device, pieces=False)
        if args.tta:
            from digitformer.inference.ensemble import Ensemble

            reader.model = Ensemble([reader.model], tta=True)
        return reader

    if args.reader == "pieces":
        import digitformer.inference.pieces

        digitformer.inference.pieces.CUTS = not args.no_cuts
        number = load_number()
        pieces = InPieces(number, digitformer.load(digit_src, device=args.device))
        for name in NUMBER_SETS:
            run(name, "number", number, suite[name], whole)
            run(name, "pieces", pieces, suite[name], whole)
    if args.reader in ("number", "both"):  # the sequence model alone, the whole picture at once
        number = load_number()
        for name in NUMBER_SETS:
            run(name, "number", number, suite[name], whole)
        for name in DIGIT_SETS:
            run(name, "number", number, suite[name], whole)
    if args.reader in ("digit", "both"):
        digit = digitformer.load(digit_src, device=args.device)
        if args.no_novelty:
            digit.model.novelty = None
        for name in DIGIT_SETS:
            run(name, "digit", digit, suite[name], whole)
        for name in NUMBER_SETS:
            run(name, "digit-by-digit", digit, suite[name], digit_by_digit)
    order = {n: i for i, n in enumerate(NUMBER_SETS + DIGIT_SETS)}
    rank = {"number": 0, "pieces": 1, "digit-by-digit": 2, "digit": 3}
    results.sort(
        key=lambda r: (order[r["set"]] >= len(NUMBER_SETS), rank[r["reader"]], order[r["set"]])
    )
    wall_s = time.perf_counter() - wall
    print()
    print(table(results))
    print(
        f"\nwall {wall_s:.0f} s (building {build_s:.1f} s), torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), {cpu_name()}"
    )
    out = {
        "suite": "independent",
        "command": "python -m benchmarks.independent.evaluate "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "count": args.count,
        "tta": args.tta,
        "readers": {
            "number": number_src if args.reader != "digit" else None,
            "digit": digit_src if args.reader != "number" else None,
        },
        "machine": {
            "cpu": cpu_name(),
            "processor": platform.processor(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": args.device,
            "python": platform.python_version(),
        },
        "commit": git_commit(),
        "bundled": bundled(),  # which bundled models it read: the commit may not say
        "build_s": round(build_s, 2),
        "wall_s": round(wall_s, 1),
        "sizes": {k: len(v) for k, v in suite.items()},
        "table": table(results),
        "results": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
