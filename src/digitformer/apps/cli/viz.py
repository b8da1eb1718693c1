"""`digitformer viz [CHECKPOINT]`: pictures of a model."""

from __future__ import annotations

from digitformer.apps.cli.common import computing, env_file
from digitformer.apps.viz import PICTURES as VIZ_PICTURES
from digitformer.utils.defaults import VIZ_DIR
from digitformer.utils.errors import DigitformerError


def register(sub, shared) -> None:
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
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="run folder or checkpoint (default: MODEL_PATH, else the bundled pretrained:digit)",
    )
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


def cmd_viz(args) -> int:
    try:  # matplotlib and scikit-learn are the viz extra, not core dependencies
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401

        from digitformer.apps.viz.run import VizOptions, from_env, visualize
    except ImportError as exc:
        raise DigitformerError(
            f"pictures need the viz extra: pip install 'digitformer[viz]' ({exc})"
        ) from None

    computing(args)
    checkpoint, samples = from_env(args.checkpoint, args.samples, env_file(args.env_file))
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
