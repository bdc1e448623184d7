# One command sets up and runs the demo, one runs the tests (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
FMNIST  = /usr/share/datasets/fashion-mnist
RUN    ?= runs/demo

.PHONY: install data browser demo test bench bench-tools clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[train,serving,test,experiments]"
	touch $@

# Fashion-MNIST from Debian's package when we are root and it is missing;
# otherwise kvae falls back to tensorflow-datasets (which downloads it).
data:
	@if [ -n "$$KVAE_DATA_DIR" ] || [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: found local IDX files"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST: no local files and not root; kvae will use tensorflow-datasets"; \
	fi

# Headless Chromium for tests/test_explorer.py (driven by Playwright, from the test extra), from Debian's
# package when we are root and it is missing; Playwright's own browser download is never used.
CHROMIUM = /usr/bin/chromium

browser:
	@if [ -x $(CHROMIUM) ]; then \
		echo "Chromium: found $(CHROMIUM)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq chromium; \
	else \
		echo "Chromium: $(CHROMIUM) is missing and we are not root; install it with: sudo apt-get install chromium"; \
	fi

ART    ?= artifacts/demo
# kvae serve's default --port, where the explorer page is served at /
SERVE_PORT = 8000

demo: install data
	$(BIN)/kvae train --run-dir $(RUN) --architecture mlp --latent-dim 16 --epochs 10
	$(BIN)/kvae export $(RUN) --out $(ART) --force
	$(BIN)/kvae generate $(ART) --n 64 --seed 0 --out $(RUN)/onnx_samples.png
	@echo "Pictures: $(RUN)/samples.png $(RUN)/reconstructions.png $(RUN)/history.png $(RUN)/onnx_samples.png"
	@echo "Artifacts (SavedModel + ONNX + manifest.json): $(ART); serve them with: $(BIN)/kvae serve $(ART)"
	@echo "Explorer: run \`$(BIN)/kvae serve $(ART)\` and open http://127.0.0.1:$(SERVE_PORT)/"

test: install data browser
	$(BIN)/python -m pytest -q -n 3 --dist loadfile --durations=20

# wrk drives the serving load benchmark (benchmarks/load.py); Debian packages it.
bench-tools:
	@if command -v wrk >/dev/null; then \
		echo "wrk: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq wrk; \
	else \
		echo "wrk: missing and not root; install it with: sudo apt-get install wrk"; \
	fi

# Speed benchmark (about 25 minutes): BENCHMARKS.md tables and benchmarks/results.json.
bench: install data bench-tools
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) runs artifacts .pytest_cache
