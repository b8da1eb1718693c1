"""`digitformer export CHECKPOINT OUT.onnx|OUT.pt`."""

from __future__ import annotations


def register(sub, shared) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript",
        description="Export a checkpoint as one graph with a dynamic batch that reads as the "
        "model does: float images (B, 1, H, W) in [0, 1] -> digits (B, S) and probabilities "
        "(B, S, V): S = 1 for a digit, 4 for a grid (greedy decoding inside the graph), a "
        "number's digits then its end token (10).",
    )
    p.add_argument("checkpoint")
    p.add_argument("out", help="output file (e.g. model.onnx or model.pt)")
    p.add_argument(
        "--format",
        choices=("onnx", "torchscript"),
        help="default: from OUT's suffix (.onnx; .pt, .pth or .ts for TorchScript)",
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from digitformer.inference.checkpoint import load_model
    from digitformer.inference.export import export_model
    from digitformer.inference.readers import kind_of

    model, meta = load_model(args.checkpoint)
    path = export_model(model, args.format, args.out)
    print(f"exported the {kind_of(model).name} reader ({meta['model_type']}) to {path}")
    return 0
