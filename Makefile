# `make run` is the main job, `make test` the suite; both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= --durations=15
# `make test` runs the suite in this many processes (pytest-xdist), each test file whole in one
# of them so its module fixtures are built once; then the files marked `timing` (wall-clock
# bounds a neighbour's training would break) alone. The slow accuracy runs stay in one process.
TEST_WORKERS ?= 2
# The offline data mirror beside the clone, unless RNNKIT_DATA_DIR says otherwise.
ifneq ($(wildcard ../shared/data),)
export RNNKIT_DATA_DIR ?= $(abspath ../shared/data)
endif

.PHONY: run test test-slow lint bench lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/rnnkit run $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	bash tests/browser/install_chromium.sh
	$(BIN)/python -m pytest -m "not slow and not timing" -n $(TEST_WORKERS) --dist loadfile \
		$(PYTEST_ARGS)
	$(BIN)/python -m pytest -m "timing and not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/layers.py

# Re-pin every dependency after changing pyproject.toml.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info
