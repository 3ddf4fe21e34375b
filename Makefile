# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision builds: override for your platform, e.g. make TORCH_SPEC="torch torchvision" demo
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= runs/demo
# the demo's training budget: images seen, or with DEMO_MINUTES > 0 a wall-clock budget instead
DEMO_IMAGES ?= 8000
DEMO_MINUTES ?= 0

.PHONY: venv demo test test-fast lint bench docs docs-serve clean

$(BIN)/blendseg: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(BIN)/blendseg

venv: $(BIN)/blendseg

demo: venv
	$(BIN)/python tools/demo.py --out $(DEMO_OUT) --images $(DEMO_IMAGES) --minutes $(DEMO_MINUTES)

lint: venv
	$(BIN)/ruff check src tests tools benchmarks docs/gen_reference.py docs/hooks.py
	$(BIN)/ruff format --check src tests tools benchmarks docs/gen_reference.py docs/hooks.py

# everything (CI): the multi-second end-to-end tests included
test: venv lint
	$(BIN)/python -m pytest tests

# the edit loop: tests marked slow (exports, trained models, subprocess and multi-process runs) left out
test-fast: venv lint
	$(BIN)/python -m pytest tests -m "not slow"

# the docs site (mkdocs-material; the reference pages generated from the code): site/, or served on :8000
docs: venv
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict

docs-serve: venv
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs serve

bench: venv
	$(BIN)/python -m benchmarks.fcos_budget --out runs/bench_fcos

clean:
	rm -rf $(VENV) runs build site *.egg-info src/*.egg-info
