"""Where things go unless the user says otherwise: every `.data/...` path in one place."""

DATA_DIR = ".data"  # MNIST parquet files and the decoded cache
RUNS_DIR = ".data/models"  # training runs: RUNS_DIR/<run>/{last,best}.safetensors
SWEEP_DIR = ".data/sweeps"  # sweep trials' runs and the default study database
SWEEP_STORAGE = f"sqlite:///{SWEEP_DIR}/sweeps.db"
VIZ_DIR = ".data/visualizations"
ENV_FILE = ".env"
