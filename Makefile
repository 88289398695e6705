# Two commands on a fresh machine with Python 3.10+ and pip:
#   make demo   build (or reuse) the embedded base model, train it with GRPO, print pass@1 before/after
#   make test   the test suite
# Both create .venv and install into it. TORCH pins the CPU wheel; on a GPU
# machine install your own torch first and run `pip install -e .` instead.

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rlvr-installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test,tracking,code]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rlvr train recipes/tiny/grpo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow

clean:
	rm -rf $(VENV) runs .pytest_cache
