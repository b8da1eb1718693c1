"""An HTTP API and a drawing page over trained checkpoints.

    digitformer serve .data/models/encoder-decoder-default .data/models/encoder-only-default

POST /predict takes an image upload (multipart field `file`, or a raw image body) or JSON
{"pixels": [[0-255, ...], ...]}; images are prepared exactly as `digitformer predict` prepares
them. GET /health, GET /models, GET / (the page), GET /docs (the generated OpenAPI page).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect

from digitformer.inference.checkpoint import PRETRAINED, PRETRAINED_DIR
from digitformer.inference.prepare import TooLarge, read_gray
from digitformer.inference.reader import Reader, load_readers
from digitformer.inference.readers import READERS, where_looked
from digitformer.utils.defaults import RUNS_DIR
from digitformer.utils.errors import DigitformerError

MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MAX_PIXELS_SIDE = 1024
MAX_UPLOAD_PIXELS = 4096 * 4096  # what an upload may declare (a phone photo is ~12M)
DECODERS = 4  # images decoded at once: bounds the memory that concurrent requests can take
MAX_WAITING = 32  # predictions queued behind those: more are refused at once (503), not kept
RETRY_AFTER = "2"  # seconds a refused client is told to wait: about the queue's time on 2 cores
PAGE = Path(__file__).with_name("index.html")


class Pixels(BaseModel):
    """A grayscale image as rows of numbers: 0-255, or 0-1 floats."""

    pixels: list[list[float]]


class PredictResponse(BaseModel):
    model: str
    model_type: str
    digits: str | None  # None: nothing to read, and `reason` says why
    confidence: list[float]
    probabilities: list[list[float]]
    number_confidence: float | None = None  # the whole reading's probability
    low_confidence: bool = False  # some digit read with probability under LOW_CONFIDENCE
    spans: list[list[float]] = []  # per digit, its columns [left, right) as shares of the width
    reason: str | None = None
    warning: str | None = None  # the picture looks like what another reader reads...
    looks_like: str | None = None  # ...and that reader's kind (digit, grid or number)
    input: list[list[int]] | None = None  # the prepared model input, with attention
    attention: list[list[list[float]]] | None = None  # one map per digit, max 1


def default_checkpoints(runs_dir: str | Path = RUNS_DIR) -> list[str]:
    """What `serve` with no argument serves: the bundled models; without them (a trimmed
    installation), the default profiles' runs in `runs_dir`."""
    bundled = [
        f"pretrained:{name}"
        for name in PRETRAINED
        if (PRETRAINED_DIR / f"{name}.safetensors").is_file()
    ]
    if bundled:
        return bundled
    runs = (Path(runs_dir) / f"{kind.task}-default" for kind in READERS.values())
    found = [str(p) for p in runs if p.is_dir()]
    if not found:
        others = sorted(p.name for p in Path(runs_dir).glob("*") if p.is_dir())
        listed = f" (it holds {', '.join(others)}: name one)" if others else ""
        raise DigitformerError(f"no checkpoint given and none in {runs_dir}{listed}")
    return found


def load_models(paths: list[str], device: torch.device) -> dict[str, Reader]:
    return load_readers(paths, device)


def _errors_as_json(app: FastAPI) -> None:
    """Every error the app answers is {"error": "..."}: its own, Starlette's (404, 405, the
    form parser's 400s) and the request validation's."""

    @app.exception_handler(HTTPException)
    @app.exception_handler(StarletteHTTPException)
    async def error_json(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_json(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse({"error": problems or "invalid request"}, status_code=422)


def create_app(
    models: dict[str, Reader],
    max_upload: int = MAX_UPLOAD_BYTES,
    hosts: list[str] | None = None,
    max_waiting: int = MAX_WAITING,
) -> FastAPI:
    """The app over `models`; `hosts`: the only Host headers it answers (None: any). At most
    DECODERS predictions run at once and `max_waiting` wait; past that a prediction is refused
    with 503 and Retry-After, so that an overloaded server answers early and /health stays
    quick rather than every request waiting longer."""
    gate = Gate(DECODERS, max_waiting)
    app = FastAPI(
        title="digitformer",
        description="Read handwritten digits: one digit (encoder-only ViT), the four digits "
        "of a 2x2 grid, or a whole number of any length (encoder-decoders). POST /predict "
        "with ?kind=digit|grid|number or ?model=NAME from /models.",
    )

    if hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)

    _errors_as_json(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "models": len(models)}

    @app.get("/models")
    def list_models() -> list[dict]:
        return [m.describe() for m in models.values()]

    @app.post(
        "/predict",
        response_model=PredictResponse,
        openapi_extra={"requestBody": {"required": True, "content": BODY_SCHEMA}},
        responses={400: {}, 404: {}, 413: {}, 415: {}, 422: {}},
    )
    async def predict(
        request: Request,
        model: str | None = Query(None, description="a name from /models"),
        kind: Literal["digit", "grid", "number"] | None = Query(
            None, description="pick a model by kind"
        ),
        attention: bool = Query(False, description="also return the attention map per digit"),
    ) -> PredictResponse:
        chosen = _choose(models, model, kind)
        async with gate.admit():
            body, ctype = await _read_body(request, max_upload)
            async with gate.running:  # decoding and reading run off the event loop, a few at once
                pixels = await run_in_threadpool(_pixels, body, ctype)
                return await run_in_threadpool(_predict, chosen, pixels, attention)

    return app


BODY_SCHEMA = {  # what /predict takes, for the OpenAPI page
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "properties": {"file": {"type": "string", "format": "binary"}},
            "required": ["file"],
        }
    },
    "application/json": {"schema": Pixels.model_json_schema()},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
}


class Gate:
    """Admission to the readers: `running` at once, `waiting` more queued behind them; past
    that a request is refused at once with 503 and Retry-After."""

    def __init__(self, running: int, waiting: int) -> None:
        self.running = asyncio.Semaphore(running)
        self.limit, self.count = running + waiting, 0

    @contextlib.asynccontextmanager
    async def admit(self):
        if self.count >= self.limit:
            raise HTTPException(
                503, "busy: too many pictures waiting; try again", {"Retry-After": RETRY_AFTER}
            )
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


def _choose(models: dict[str, Reader], name: str | None, kind: str | None) -> Reader:
    if name is not None:
        if name not in models:
            raise HTTPException(404, f"no model {name!r}; see /models")
        return models[name]
    for m in models.values():
        if kind is None or m.kind == kind:
            return m
    raise HTTPException(404, f"no {kind} model loaded; see /models")


async def _read_body(request: Request, limit: int) -> tuple[bytes, str]:
    """The request's image bytes, read as a stream and refused (413) the moment they pass
    `limit`: a chunked upload cannot make the server buffer more than that."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body over {limit:,} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"request body over {limit:,} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # the client left mid-upload: nothing to answer, nothing to log
        raise HTTPException(400, "the client disconnected during the upload") from None
    body = b"".join(chunks)
    if not body:
        raise HTTPException(400, "empty request body: send an image or JSON pixels")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        request._body = body  # Starlette parses the form from the body already read
        form = await request.form(max_files=1, max_fields=5)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "multipart upload needs an image in the field 'file'")
        return await upload.read(), "image/upload"
    # curl --data-binary @x.png labels the bytes as a form: they are read as the image they are
    readable = ("application/json", "application/octet-stream", "application/x-www-form-urlencoded")
    if ctype not in readable and not ctype.startswith("image/"):
        raise HTTPException(415, f"unsupported content type {ctype or 'none'!r}")
    return body, ctype


def _pixels(body: bytes, ctype: str) -> np.ndarray:
    """Request bytes -> float grayscale (H, W) in [0, 1]."""
    if ctype == "application/json":
        return _json_pixels(body)
    try:
        return read_gray(io.BytesIO(body), name="upload", max_pixels=MAX_UPLOAD_PIXELS)
    except TooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except DigitformerError as exc:
        raise HTTPException(415, str(exc)) from None


def _json_pixels(body: bytes) -> np.ndarray:
    try:
        pixels = Pixels.model_validate(json.loads(body)).pixels
    except RecursionError:  # [[[[... thousands deep: no picture is nested so
        raise HTTPException(422, "JSON body nested too deeply: send {'pixels': [[...]]}") from None
    except ValidationError as exc:  # its text runs over lines: its first error, in one
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "body"
        message = f"JSON body must be {{'pixels': [[...], ...]}} ({where}: {first['msg']})"
        raise HTTPException(422, message) from None
    except (ValueError, TypeError) as exc:
        raise HTTPException(422, f"JSON body must be {{'pixels': [[...], ...]}} ({exc})") from None
    rows = {len(row) for row in pixels}
    if not pixels or len(rows) != 1 or 0 in rows:
        raise HTTPException(422, "pixels must be a non-empty rectangle of rows")
    array = np.asarray(pixels, dtype=np.float64)  # checked before float32 could overflow
    if max(array.shape) > MAX_PIXELS_SIDE:
        raise HTTPException(413, f"pixels larger than {MAX_PIXELS_SIDE} a side")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise HTTPException(422, "pixels must be numbers from 0 to 255 (or 0 to 1)")
    return (array / 255.0 if array.max() > 1 else array).astype(np.float32)


def _predict(chosen: Reader, pixels: np.ndarray, with_attention: bool) -> PredictResponse:
    readings = chosen.read_pictures([pixels], ["upload"])
    if readings.errors:
        raise HTTPException(422, readings.errors[0].removeprefix("upload: "))
    found = readings.results[0]
    response = PredictResponse(
        model=chosen.name,
        model_type=chosen.model_type,
        digits=found.digits,
        confidence=found.confidence,
        probabilities=found.probabilities,
        number_confidence=found.number_confidence,
        low_confidence=found.low_confidence,
        spans=found.spans,
        reason=found.reason,
        warning=found.warning,
        looks_like=found.looks_like,
    )
    if with_attention and found.digits is not None:
        image = readings.inputs[0]
        response.input = image.tolist()
        maps = where_looked(chosen.model, torch.from_numpy(image[None]).to(chosen.device))[0]
        # read in pieces, a number can have more digits than the whole-canvas reading
        maps = np.concatenate([maps, np.zeros((len(found.digits), *maps.shape[1:]))])
        response.attention = maps[: len(found.digits)].tolist()
    return response
