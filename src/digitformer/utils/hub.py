"""The Hugging Face Hub, behind one function that fails fast and in one line when it is out of
reach (no network, no `huggingface_hub`), for data (`data fetch --source hf`) and checkpoints
(`hf://owner/repo`).

path = download("ylecun/mnist", "mnist/test-00000-of-00001.parquet", repo_type="dataset")
"""

from __future__ import annotations

import socket
from pathlib import Path

from digitformer.utils.errors import DigitformerError

HUB_HOST = "huggingface.co"


def reachable(host: str = HUB_HOST, timeout: float = 5.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def download(
    repo_id: str, filename: str, *, repo_type: str = "model", local_dir: str | Path | None = None
) -> Path:
    """One file of a Hub repository, through huggingface_hub's cache (or into `local_dir`)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DigitformerError(
            "the Hugging Face Hub needs huggingface_hub: pip install 'digitformer[hf]'"
        ) from None
    if not reachable():
        raise DigitformerError(f"the Hugging Face Hub ({HUB_HOST}) is not reachable")
    try:
        local = hf_hub_download(repo_id, filename, repo_type=repo_type, local_dir=local_dir)
    except Exception as exc:  # network, authentication, a missing repository or file
        message = f"Hugging Face download of {repo_id}/{filename} failed ({exc})"
        raise DigitformerError(message) from None
    return Path(local)
