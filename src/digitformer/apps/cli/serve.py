"""`digitformer serve [CHECKPOINT...]`: the drawing page and the HTTP API."""

from __future__ import annotations

from digitformer.apps.cli.common import computing
from digitformer.utils.errors import DigitformerError


def register(sub, shared) -> None:
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


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from digitformer.apps.serve.app import create_app, default_checkpoints, load_models
    except ImportError as exc:
        raise DigitformerError(
            f"serving needs the serve extra: pip install 'digitformer[serve]' ({exc})"
        ) from None
    from digitformer.utils.runtime import pick_device

    computing(args)
    if not 0 < args.port < 65536:
        raise DigitformerError(f"--port must be 1-65535, got {args.port}")
    _check_free(args.host, args.port)  # before anything says where to look
    models = load_models(args.checkpoints or default_checkpoints(), pick_device(args.device))
    for m in models.values():
        print(f"serving {m.name} ({m.kind} reader, {m.model_type}) from {m.source}")
    print(f"open http://{args.host}:{args.port}/  (API docs at /docs)")
    app = create_app(models, hosts=_own_names(args.host))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _check_free(host: str, port: int) -> None:
    """Refuse a port something else listens on, rather than point the user at its server."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise DigitformerError(f"cannot serve on {host}:{port}: {exc.strerror}") from None


def _own_names(host: str) -> list[str] | None:
    """The Host headers a server on the loopback answers (its own names: a web page elsewhere
    that renames itself to 127.0.0.1 by DNS rebinding is refused); None: any, when it was
    bound to an outside address on purpose."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return ["127.0.0.1", "localhost", "[::1]", "::1"]
    return None
