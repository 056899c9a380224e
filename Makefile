# Quick start:  make serve   (set up, then run the server on port 8000)
#               make test    (set up, then run the whole test suite)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
TESTING := $(VENV)/.installed-test
SOURCES := setup.py pyproject.toml $(wildcard src/tradestats/*.pyx src/tradestats/*.pxd src/tradestats/*.h src/tradestats/*.py src/tradestats/*/*.py src/tradestats/web/static/*)
PORT   ?= 8000
HOST   ?= 127.0.0.1
PYTEST_ARGS ?=

.PHONY: setup serve test bench clean

# make serve installs what the server needs, nothing else; make test adds the test tools.
setup: $(RUNTIME)

$(RUNTIME): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

# meinheld's published metadata pins greenlet<0.5, which does not build on Python >= 3.10:
# install a current greenlet first, then meinheld without its dependency metadata.
# meinheld is optional (--server gunicorn --worker-class meinheld); the default server is granian.
$(TESTING): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "greenlet>=3"
	$(BIN)/python -m pip install --quiet --no-deps meinheld || echo "meinheld did not build: --worker-class meinheld will be unavailable"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(TESTING) $(RUNTIME)

serve: setup
	$(BIN)/tradestats-serve --host $(HOST) --port $(PORT)

test: $(TESTING)
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

bench: $(TESTING)
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info src/tradestats/*.so src/tradestats/*.c
