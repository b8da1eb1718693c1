import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from digitformer.apps.serve.app import create_app, load_models
from digitformer.data.grids import make_grids
from digitformer.data.mnist import load_split
from digitformer.inference.checkpoint import load_model
from helpers import read_files


@pytest.fixture(scope="module")
def client(trained_runs):
    models = load_models(list(trained_runs.values()), "cpu")
    return TestClient(create_app(models, max_upload=200_000))


@pytest.fixture(scope="module")
def test_grids(trained_runs):
    from pathlib import Path

    data = Path(trained_runs["encoder-only"]).parents[1] / "data"
    test = load_split(data, "test")
    return make_grids(test.images, test.labels, 3, seed=5), test


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_models_and_openapi(client):
    assert client.get("/health").json() == {"status": "ok", "models": 3}
    models = client.get("/models").json()
    assert [(m["name"], m["kind"], m["input_shape"]) for m in models] == [
        ("encoder-only", "digit", [28, 28]),
        ("encoder-decoder", "grid", [56, 56]),
        ("numbers", "number", [28, 56]),
    ]
    assert all(m["epoch"] == 2 or m["epoch"] == 1 for m in models)
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert "drawing" in client.get("/").text.lower()


def test_upload_predicts_what_predict_does(client, test_grids, trained_runs, tmp_path):
    grids, _ = test_grids
    path = tmp_path / "grid.png"
    path.write_bytes(png(grids.images[0]))
    model, _ = load_model(trained_runs["encoder-decoder"])
    readings = read_files(model, [path])
    (expected,), errors = readings.results, readings.errors
    answer = client.post("/predict?kind=grid", files={"file": ("grid.png", path.read_bytes())})
    assert answer.status_code == 200 and not errors
    body = answer.json()
    assert body["digits"] == expected.digits and body["model"] == "encoder-decoder"
    np.testing.assert_allclose(body["probabilities"], expected.probabilities, rtol=1e-5)
    assert body["attention"] is None
    raw = client.post(
        "/predict?kind=grid", content=path.read_bytes(), headers={"content-type": "image/png"}
    )
    assert raw.json()["digits"] == expected.digits


def test_a_number_is_read_with_where_the_model_looked_for_each_digit(client, test_grids):
    _, test = test_grids
    line = np.zeros((60, 200), np.uint8)  # two digits side by side, bigger than the canvas
    for i, digit in enumerate(test.images[:2]):
        line[2:58, 20 + 90 * i : 76 + 90 * i] = np.kron(digit, np.ones((2, 2), np.uint8))
    answer = client.post(
        "/predict?kind=number&attention=true", files={"file": ("n.png", png(line))}
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["model"] == "numbers"
    if body["digits"] is None:  # a barely trained model may end at once: it says so
        assert "no number read" in body["reason"]
        return
    assert 1 <= len(body["digits"]) <= 2 and len(body["confidence"]) == len(body["digits"])
    assert body["number_confidence"] == pytest.approx(np.prod(body["confidence"]), rel=1e-5)
    assert len(body["spans"]) in (0, len(body["digits"]))  # read in pieces: each digit's place
    assert all(0 <= a < b <= 1 for a, b in body["spans"])  # as shares of the width
    assert np.array(body["input"]).shape == (28, 56)
    attention = np.array(body["attention"])
    assert attention.shape == (len(body["digits"]), 4, 8)  # per digit, over the 4x8 patches
    assert attention.max() == pytest.approx(1.0)


def test_json_pixels_and_attention(client, test_grids):
    _, test = test_grids
    digit = test.images[0]
    as_255 = client.post("/predict?model=encoder-only", json={"pixels": digit.tolist()}).json()
    as_01 = client.post(
        "/predict?kind=digit&attention=true", json={"pixels": (digit / 255).tolist()}
    ).json()
    assert as_255["digits"] == as_01["digits"] and len(as_255["digits"]) == 1
    assert np.asarray(as_01["input"]).shape == (28, 28)
    attention = np.asarray(as_01["attention"])  # one map, the CLS token's, max 1
    assert attention.shape == (1, 4, 4) and attention.max() == pytest.approx(1.0)
    grid = client.post(
        "/predict?kind=grid&attention=true", json={"pixels": test_grids[0].images[1].tolist()}
    ).json()
    assert np.asarray(grid["attention"]).shape == (4, 2, 2)  # per digit, over the 4 quadrants


@pytest.mark.parametrize(
    "request_kwargs, status, message",
    [
        ({"content": b"x" * 300_000, "headers": {"content-type": "image/png"}}, 413, "over"),
        ({"files": {"file": ("a.png", b"not an image at all")}}, 415, "cannot read image"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "content type"),
        ({"json": {"pixels": [[1, 2], [3]]}}, 422, "rectangle"),
        ({"json": {"pixels": [[-5, 2], [3, 4]]}}, 422, "0 to 255"),
        ({"json": {"image": []}}, 422, "JSON body must be"),
        ({"content": b"", "headers": {"content-type": "image/png"}}, 400, "empty"),
        ({"data": {"other": "x"}, "files": {"nofile": ("a.txt", b"x")}}, 422, "field 'file'"),
    ],
)
def test_bad_requests_get_clear_json_errors(client, request_kwargs, status, message):
    answer = client.post("/predict", **request_kwargs)
    assert answer.status_code == status
    assert message in answer.json()["error"]
    assert client.get("/health").status_code == 200  # the server stays up


def test_unknown_model_is_404(client):
    answer = client.post("/predict?model=nope", json={"pixels": [[0]]})
    assert answer.status_code == 404 and "no model 'nope'" in answer.json()["error"]


def test_every_error_is_one_json_shape(client):
    """A route that is not there, a method it does not take, and JSON nested thousands deep:
    each an {"error": ...} answer like the others, and the server stays up."""
    missing, wrong_method = client.get("/nowhere"), client.get("/predict")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    deep = b'{"pixels": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    answer = client.post("/predict", content=deep, headers={"content-type": "application/json"})
    assert answer.status_code == 422 and "nested too deeply" in answer.json()["error"]
    assert client.get("/health").status_code == 200


@pytest.fixture(scope="module")
def live_server(trained_runs):
    """The app behind a real uvicorn server on a free port (a thread of this process)."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(load_models([trained_runs["encoder-only"]], "cpu"), max_upload=200_000)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def send_chunked(port: int, total: int, chunk: int = 65536) -> tuple[int, bytes]:
    """Stream `total` bytes as a chunked upload; stop when the server answers or hangs up.
    -> (bytes sent, the start of the answer)."""
    import select
    import socket

    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent < total:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered
                sock.sendall(b"%x\r\n" % chunk + b"\0" * chunk + b"\r\n")
                sent += chunk
        except OSError:
            pass  # it hung up on us
        answer = sock.recv(200)
    return sent, answer


def test_a_chunked_upload_is_cut_off_at_the_limit(live_server):
    sent, answer = send_chunked(live_server, 100_000_000)
    assert answer.startswith(b"HTTP/1.1 413")
    assert sent < 10_000_000  # refused near the 200 KB limit, not after 100 MB were buffered


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(client):
    huge = io.BytesIO()
    Image.new("L", (5000, 5000)).save(huge, format="PNG", optimize=True)  # ~25 KB on the wire
    assert len(huge.getvalue()) < 200_000
    answer = client.post("/predict", content=huge.getvalue(), headers={"content-type": "image/png"})
    assert answer.status_code == 413 and "5000x5000" in answer.json()["error"]


def test_a_blank_drawing_is_answered_with_no_digits_and_a_reason(client):
    answer = client.post(
        "/predict?kind=digit",
        content=png(np.full((200, 200), 255, np.uint8)),
        headers={"content-type": "image/png"},
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["digits"] is None and "no digit found" in body["reason"]


def test_every_error_is_json_and_curl_uploads_work(client, test_grids):
    answer = client.post("/predict?kind=triangle", json={"pixels": [[0]]})
    assert answer.status_code == 422 and "kind" in answer.json()["error"]
    grids, _ = test_grids
    # what `curl --data-binary @grid.png URL` sends: the bytes, labelled as a form
    answer = client.post(
        "/predict?kind=grid",
        content=png(grids.images[0]),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200 and len(answer.json()["digits"]) == 4


def test_serve_refuses_a_busy_port_and_answers_only_its_own_names(monkeypatch, capsys):
    """`serve` on a port another server holds says so before pointing anyone at it; started,
    it names each model and answers only Host headers that are its own (DNS rebinding)."""
    import socket

    import uvicorn

    from digitformer.apps.cli import main

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    out, err = capsys.readouterr()
    assert "cannot serve on 127.0.0.1" in err and "open http" not in out
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    assert main(["serve", "pretrained:digit", "--port", str(port)]) == 0
    assert (
        "serving digit (digit reader, encoder-only) from pretrained:digit"
        in capsys.readouterr().out
    )
    client = TestClient(started["app"], base_url=f"http://127.0.0.1:{port}")
    assert client.get("/health").status_code == 200
    assert client.get("/health", headers={"host": "evil.example"}).status_code == 400


def test_an_overloaded_server_refuses_early_with_retry_after(trained_runs, test_grids):
    """Twenty pictures at once to a server that runs 4 and queues none: the first are read,
    the rest refused at once with 503, Retry-After and a JSON error, and /health answers."""
    import asyncio

    import httpx

    from digitformer.apps.serve.app import DECODERS

    app = create_app(load_models([trained_runs["encoder-only"]], "cpu"), max_waiting=0)
    _, test = test_grids
    body = png(test.images[0])

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            sent = [
                client.post("/predict", content=body, headers={"content-type": "image/png"})
                for _ in range(20)
            ]
            answers = await asyncio.gather(*sent)
            return answers, await client.get("/health")

    answers, health = asyncio.run(burst())
    codes = [a.status_code for a in answers]
    assert set(codes) == {200, 503} and DECODERS <= codes.count(200) < 20
    refused = next(a for a in answers if a.status_code == 503)
    assert refused.headers["retry-after"].isdigit() and "busy" in refused.json()["error"]
    assert len({a.json()["digits"] for a in answers if a.status_code == 200}) == 1
    assert health.status_code == 200


def test_a_client_that_leaves_mid_upload_is_no_error_in_the_log(client, caplog):
    """Half a picture, then the connection drops: the server notes nothing at ERROR."""
    import asyncio

    messages = [
        {"type": "http.request", "body": b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        "headers": [(b"host", b"t"), (b"content-type", b"image/png")],
    }  # fmt: skip
    with caplog.at_level("ERROR"):
        asyncio.run(client.app(scope, receive, send))
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert sent[0]["status"] == 400
