# One command each: `make demo` runs the main job on the embedded world, `make test` passes the tests.
# Both create ./.venv first. CPU torch is pinned for this kind of machine; GPU users override it, e.g.
#   make test TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu121"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev,nudenet]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	mkdir -p demo
	$(BIN)/obliviate generate --model world --prompt "a photo of zorvik" -n 16 --seed 0 --scale 4 --out demo/zorvik.png
	$(BIN)/obliviate eval --model world --images-per-concept 16 --seed 0 --json demo/eval.json --report demo/report.html
	@echo "demo outputs: demo/zorvik.png, demo/eval.json, report: demo/report.html"

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo
