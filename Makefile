# One command each: `make demo` runs the main job on the embedded world, `make test` passes the tests.
# Both create ./.venv first. CPU torch is pinned for this kind of machine; GPU users override it, e.g.
#   make test TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu121"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# test processes, one torch thread each (tests/conftest.py): on the world's small batches two processes do twice the
# work of one process with two threads
WORKERS ?= 2
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev,nudenet]'
	touch $@

setup: $(BIN)/.installed

# The main job: erase one concept (the ID "zorvik") with Forget-Me-Not, evaluate the patch on the whole
# world bench, and write the HTML report.
demo: setup
	mkdir -p demo
	$(BIN)/obliviate erase --model world --method fmn --concept zorvik --seed 0 --out demo/fmn-zorvik.safetensors
	$(BIN)/obliviate eval --model world --patch demo/fmn-zorvik.safetensors --seed 0 \
		--json demo/eval.json --report demo/report.html
	$(BIN)/obliviate generate --model world --prompt "a photo of zorvik" -n 16 --seed 0 --scale 4 --out demo/zorvik-before.png
	$(BIN)/obliviate generate --model world --prompt "a photo of zorvik" -n 16 --seed 0 --scale 4 \
		--patch demo/fmn-zorvik.safetensors --out demo/zorvik-after.png
	@echo "report: $(CURDIR)/demo/report.html (summary: demo/report.md; numbers: demo/eval.json)"

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q -n $(WORKERS) --dist loadfile

test-fast: setup
	$(BIN)/pytest -q -m "not slow" -n $(WORKERS) --dist loadfile

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo
