import io

from digitformer.training.logger import Logger


def test_console_logger_prints_lines():
    stream = io.StringIO()
    logger = Logger(stream=stream)
    logger.print("epoch 1/1 | loss 0.1")
    logger.log({"loss": 0.1}, step=1)  # no W&B: a no-op
    logger.finish()
    assert stream.getvalue() == "epoch 1/1 | loss 0.1\n"


def test_wandb_runs_offline_without_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    stream = io.StringIO()
    logger = Logger(wandb=True, project="test", run_name="r", config={"lr": 1e-3}, stream=stream)
    assert logger.run is not None, stream.getvalue()
    assert logger.run.settings.mode == "offline"
    logger.log({"val_accuracy": 0.5, "note": "skipped: not a number"}, step=1)
    logger.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_wandb_failure_never_stops_training(monkeypatch):
    import wandb

    def broken(**kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken)
    stream = io.StringIO()
    logger = Logger(wandb=True, stream=stream)
    assert logger.run is None and "W&B could not start (no network)" in stream.getvalue()
