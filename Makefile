# digitformer: `make run` does everything (venv, MNIST, train + evaluate both models);
# `make test` runs the lint and the test suite.
# TORCH_SPEC is what pip installs for PyTorch before the package. torch==2.13.0 pins a version,
# not a build: on an ordinary Linux machine it brings the CUDA wheels (several GB). On a machine
# without a GPU, take PyTorch's own CPU wheel instead:
#   make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
DF := $(BIN)/digitformer
RUNS := .data/models

.PHONY: setup data run train-encoder-only train-encoder-decoder test lint bench clean

setup: $(VENV)/.installed

# torch first: the package's own `torch>=2.2` is then satisfied by the build chosen above,
# and pip never swaps in another one.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

data: setup
	$(DF) data fetch

# Train (or resume, if interrupted: --resume starts over when nothing was saved yet) and
# evaluate one default-profile model.
define train_and_eval
	@if [ -d $(RUNS)/$(1)-default ]; then \
	  $(DF) train $(1) --config default --resume; else $(DF) train $(1) --config default; fi
	$(DF) eval $(RUNS)/$(1)-default --split test
endef

train-encoder-only: data
	$(call train_and_eval,encoder-only)

train-encoder-decoder: data
	$(call train_and_eval,encoder-decoder)

run: train-encoder-only train-encoder-decoder

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts docs
	$(BIN)/ruff format --check src tests benchmarks scripts docs
	$(BIN)/mypy  # the files in pyproject.toml's [tool.mypy]

test: lint
	OMP_WAIT_POLICY=PASSIVE $(BIN)/pytest -q

bench: data
	$(BIN)/python -m benchmarks.train_accuracy --task encoder-only --profile default
	$(BIN)/python -m benchmarks.train_accuracy --task encoder-decoder --profile default

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
