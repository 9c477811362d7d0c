# The README's commands. `make quickstart` sets everything up and runs the
# main job; `make test` runs the linter and the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR := /usr/share/datasets/fashion-mnist
WORKDIR ?= workdirs/quickstart
# Test worker processes (pytest-xdist); 0 runs the suite in this process.
# Work stealing keeps both busy to the end (a worker that runs out takes
# queued tests from the other).
TEST_WORKERS ?= 2

.PHONY: setup data quickstart test lint bench clean

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed data

# Fetches the offline Fashion-MNIST files when missing and apt is usable.
data:
	@if [ ! -f $(DATA_DIR)/train-images-idx3-ubyte.gz ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq || true) && apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST IDX files not in $(DATA_DIR) and apt-get is not usable:"; \
	    echo "install dataset-fashion-mnist, pass --manual_dir, or let TFDS download it."; \
	  fi; \
	fi

quickstart: setup
	$(PY) -m kd_keras.main --flagfile=kd_keras/configs/quickstart.flags --workdir=$(WORKDIR)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=15 tests

bench: setup
	$(PY) bench/distill_step.py

clean:
	rm -rf $(VENV) workdirs
