# Quick start:  make serve   (set up, then run the server on port 8000)
#               make test    (set up, then run the whole test suite)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8000
HOST   ?= 127.0.0.1
PYTEST_ARGS ?=

.PHONY: setup serve test bench clean

setup: $(STAMP)

# meinheld's published metadata pins greenlet<0.5, which does not build on Python >= 3.10:
# install a current greenlet first, then meinheld without its dependency metadata.
# meinheld is optional (--server gunicorn --worker-class meinheld); the default server is granian.
$(STAMP): setup.py pyproject.toml $(wildcard src/tradestats/*.pyx src/tradestats/*.pxd src/tradestats/*.py src/tradestats/*/*.py src/tradestats/web/static/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "greenlet>=3"
	$(BIN)/python -m pip install --quiet --no-deps meinheld || echo "meinheld did not build: --worker-class meinheld will be unavailable"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

serve: setup
	$(BIN)/tradestats-serve --host $(HOST) --port $(PORT)

test: setup
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info src/tradestats/*.so src/tradestats/*.c
