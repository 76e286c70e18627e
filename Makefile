# Two commands on a fresh machine: `make demo` and `make test`.
# Both create a project-local venv (.venv) and install everything into it.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vidray-installed
TORCH_VERSION := 2.13.0
DATA ?= data

.PHONY: install demo test bench reliability clean clean-runs

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# torch is installed first and pinned: an unpinned torch pulls several GB of CUDA wheels.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) jobs/demo.py --data $(DATA)

test: install
	$(PY) -m pytest -q tests

# Each benchmark prints one JSON object; figures and their context are in bench/RESULTS.md.
bench: install
	$(PY) bench/decoders.py --quick
	$(PY) bench/flow.py --quick
	$(PY) bench/pipeline.py --quick
	$(PY) bench/train.py --quick

# Reliability at cluster scale (bench/RESULTS.md): the tests marked `reliability` (a 3-node Ray cluster
# on this machine: tracking outage, 1,000 videos with 5 % broken, a node killed mid-epoch; skipped by
# `make test`), then bench/reliability.py at full size (60 s outage), its JSON in RELIABILITY_OUT.
RELIABILITY_OUT ?= $(DATA)/reliability.json
reliability: install
	VIDRAY_RELIABILITY=1 $(PY) -m pytest -q tests/reliability
	@mkdir -p $(dir $(RELIABILITY_OUT))
	$(PY) bench/reliability.py > $(RELIABILITY_OUT)
	@echo "figures: $(RELIABILITY_OUT)"

# Data made here (videos, manifests, checkpoints).
clean:
	rm -rf $(DATA) .pytest_cache

# Every run and registered model of the embedded MLflow store (VIDRAY_HOME, default ~/.vidray).
clean-runs:
	rm -rf "$${VIDRAY_HOME:-$$HOME/.vidray}"
