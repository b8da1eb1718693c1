"""Faults a run and a server must survive, done for real: kill -9 during training, hostile uploads.

    python -m benchmarks.faults [--kills 20] [--json benchmarks/results/faults.json]

1. Kills: a tiny training run (real MNIST subset from tests/data, 8 epochs, one thread) is
   started N times as its own process and killed with SIGKILL at a random moment; each is
   then resumed with `--resume` until it finishes. Every resumed run must end with weights
   bit-identical to an uninterrupted run, and no temporary file may remain.
2. Uploads, against `digitformer serve` in its own process: an 800 MB chunked upload, and 16
   concurrent small PNGs each declaring 5000x5000 pixels, while /health is polled. Reports
   the answers, the bytes the server took, its peak memory and the slowest /health.
3. Load (`--only load` runs just this): the bundled models served, 300 photographed digits
   (400x400 JPEGs) posted by 300 clients at once, twice, while /health is polled. Reports the
   answers (200 read, 503 refused with Retry-After), how many were read right, the
   throughput, p50/p95 of the answered requests, peak memory and the slowest /health.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import machine, write_json

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT / "tests" / "data" / "mnist-subset"
TRAIN = [
    "--env-file", "none", "--threads", "1", "--no-display", "--epochs", "8",
    "--set", "train_size=600", "--set", "val_size=300", "--set", "warmup_steps=5",
    "--set", "model.dim=32", "--set", "model.depth=2", "--set", "model.ff_dim=64",
]  # fmt: skip


def digitformer(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "digitformer", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def start(work: Path, run: str, *extra: str) -> subprocess.Popen:
    folders = ["--data-dir", str(work / "data"), "--out-dir", str(work / "runs")]
    return digitformer("train", "encoder-only", *folders, "--run", run, *TRAIN, *extra)


def train(work: Path, run: str, *extra: str) -> tuple[int, str]:
    process = start(work, run, *extra)
    _, err = process.communicate(timeout=600)
    return process.returncode, err


def weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "last.safetensors"))


def same(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def kills(work: Path, count: int, rng: random.Random) -> dict:
    t0 = time.perf_counter()
    code, err = train(work, "reference")
    if code != 0:
        sys.exit(f"error: the reference run failed: {err.strip()}")
    duration = time.perf_counter() - t0
    reference = weights(work / "runs" / "reference")
    outcomes = []
    for k in range(count):
        run = f"killed-{k}"
        at = rng.uniform(0.3 * duration, duration)  # startup, then anywhere in training
        process = start(work, run)
        time.sleep(at)
        killed = process.poll() is None
        if killed:
            process.send_signal(signal.SIGKILL)
        process.wait()
        run_dir = work / "runs" / run
        resumes = 0
        while True:  # `make run` style: resume while there is a run, else start it again
            committed = (run_dir / "last.state.safetensors").is_file()
            code, err = train(work, run, *(["--resume"] if committed else []))
            resumes += 1
            if code == 0 or resumes > 3:
                break
            if "already finished" in err:
                break
        ok = code == 0 and same(weights(run_dir), reference)
        leftovers = [p.name for p in run_dir.glob(".*.tmp")]
        outcomes.append(
            {"kill_after_s": round(at, 2), "killed": killed, "resumes": resumes,
             "identical": ok, "leftover_temporaries": leftovers, "error": err.strip()[-300:]}
        )  # fmt: skip
        print(
            f"kill {k + 1:2d} at {at:5.2f}s of ~{duration:.1f}s: "
            f"{'killed' if killed else 'already done'}, resumed in {resumes} call(s): "
            f"{'identical weights' if ok else 'DIFFERENT: ' + err.strip()[-200:]}"
            f"{', leftovers ' + str(leftovers) if leftovers else ''}",
            flush=True,
        )
    return {
        "runs": count,
        "killed": sum(o["killed"] for o in outcomes),
        "identical_after_resume": sum(o["identical"] for o in outcomes),
        "with_leftover_temporaries": sum(bool(o["leftover_temporaries"]) for o in outcomes),
        "uninterrupted_seconds": duration,
        "outcomes": outcomes,
    }


# ---- uploads ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def health_watch(port: int, stop: threading.Event, worst: list) -> None:
    import urllib.request

    while not stop.is_set():
        t0 = time.perf_counter()
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30).read()
        worst.append(time.perf_counter() - t0)
        time.sleep(0.05)


def chunked_upload(port: int, total: int, chunk: int = 1 << 20) -> tuple[int, str]:
    import select

    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"%x\r\n" % chunk + b"\0" * chunk + b"\r\n")
                sent += chunk
        except OSError:
            pass
        answer = sock.recv(100).decode(errors="replace").split("\r\n")[0]
    return sent, answer


def huge_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def uploads(work: Path) -> dict:
    import urllib.error
    import urllib.request

    port = free_port()
    server = digitformer("serve", str(work / "runs" / "reference"), "--port", str(port),
                         "--threads", "1")  # fmt: skip
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    results = {"idle_rss_mib": rss_kib(server.pid) / 1024}
    stop, worst = threading.Event(), []
    watcher = threading.Thread(target=health_watch, args=(port, stop, worst), daemon=True)
    watcher.start()
    sent, answer = chunked_upload(port, 800 << 20)
    results["chunked_800mb"] = {"answer": answer, "bytes_taken": sent}
    png = huge_png()

    def post(out: list) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=png, headers={"Content-Type": "image/png"}
        )
        try:
            out.append(urllib.request.urlopen(request, timeout=60).status)
        except urllib.error.HTTPError as exc:
            out.append(exc.code)

    statuses: list = []
    threads = [threading.Thread(target=post, args=(statuses,)) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    results["declared_5000x5000_x16"] = {
        "png_bytes": len(png),
        "statuses": sorted(statuses),
    }
    results["peak_rss_mib"] = rss_kib(server.pid, "VmHWM") / 1024
    results["slowest_health_s"] = max(worst) if worst else None
    results["alive"] = server.poll() is None
    server.terminate()
    server.wait(timeout=30)
    print(
        f"800 MB chunked upload: {answer!r} after {sent / 2**20:.0f} MiB taken; "
        f"16 PNGs of {len(png) / 1024:.0f} KB declaring 5000x5000: {sorted(set(statuses))}; "
        f"server memory idle {results['idle_rss_mib']:.0f} MiB, peak "
        f"{results['peak_rss_mib']:.0f} MiB; slowest /health {results['slowest_health_s']:.2f}s; "
        f"server {'up' if results['alive'] else 'DOWN'}",
        flush=True,
    )
    return results


def photo_jpeg(digit, seed: int) -> bytes:
    """A digit as a 400x400 photo: dark ink on grey paper with a lighting gradient and noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ink = np.asarray(Image.fromarray(digit).resize((280, 280), Image.BILINEAR), np.float32) / 255
    paper = np.full((400, 400), 200.0) + np.linspace(-25, 25, 400)[None, :]
    paper[60:340, 60:340] -= 150 * ink
    paper += rng.normal(0, 4, paper.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=85)
    return out.getvalue()


def load(rounds: int = 2, clients: int = 300) -> dict:
    """The bundled models under `clients` concurrent predictions, `rounds` times."""
    import urllib.error
    import urllib.request

    import numpy as np

    from digitformer.data import load_split

    test = load_split(SUBSET, "test")
    port = free_port()
    server = digitformer("serve", "--port", str(port))
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    stop, worst = threading.Event(), []
    watcher = threading.Thread(target=health_watch, args=(port, stop, worst), daemon=True)
    watcher.start()
    rows: list = []

    def post(i: int) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict?kind=digit",
            data=photo_jpeg(test.images[i % len(test)], i),
            headers={"Content-Type": "image/jpeg"},
        )
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                digits = json.loads(answer.read())["digits"]
                rows.append(
                    (200, time.perf_counter() - t0, digits == str(test.labels[i % len(test)]), None)
                )
        except urllib.error.HTTPError as exc:
            rows.append((exc.code, time.perf_counter() - t0, False, exc.headers.get("Retry-After")))
        except OSError:
            rows.append((0, time.perf_counter() - t0, False, None))

    t_start = time.perf_counter()
    for r in range(rounds):
        threads = [threading.Thread(target=post, args=(r * clients + i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.perf_counter() - t_start
    stop.set()
    watcher.join()
    answered = [t for code, t, _, _ in rows if code == 200]
    result = {
        "requests": len(rows),
        "read": len(answered),
        "read_right": sum(ok for *_, ok, _ in rows),
        "refused_503": sum(code == 503 for code, *_ in rows),
        "refused_with_retry_after": sum(code == 503 and ra is not None for code, *_, ra in rows),
        "failed": sum(code not in (200, 503) for code, *_ in rows),
        "wall_s": round(wall, 1),
        "read_per_s": round(len(answered) / wall, 1),
        "p50_s": round(float(np.percentile(answered, 50)), 2) if answered else None,
        "p95_s": round(float(np.percentile(answered, 95)), 2) if answered else None,
        "peak_rss_mib": rss_kib(server.pid, "VmHWM") / 1024,
        "slowest_health_s": round(max(worst), 2) if worst else None,
        "alive": server.poll() is None,
    }
    server.terminate()
    server.wait(timeout=30)
    print(
        f"load: {result['requests']} requests, {result['read']} read ({result['read_right']} "
        f"right), {result['refused_503']} refused 503, {result['failed']} failed; "
        f"{result['read_per_s']} read/s, p50 {result['p50_s']} s, p95 {result['p95_s']} s; "
        f"peak {result['peak_rss_mib']:.0f} MiB; slowest /health {result['slowest_health_s']} s",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=["load"], help="run only this part")
    args = parser.parse_args()
    if args.only == "load":
        write_json(args.json, {"load": load(), "machine": machine()})
        return
    work = Path(tempfile.mkdtemp(prefix="digitformer-faults-"))
    try:
        shutil.copytree(SUBSET, work / "data")
        result = {
            "kills": kills(work, args.kills, random.Random(args.seed)),
            "uploads": uploads(work),
            "load": load(),
            "machine": machine(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    k = result["kills"]
    print(
        f"{k['identical_after_resume']}/{k['runs']} killed runs resumed to identical weights "
        f"({k['killed']} killed mid-run), {k['with_leftover_temporaries']} with leftovers"
    )
    write_json(args.json, result)


if __name__ == "__main__":
    main()
