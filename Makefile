# Two entry points: `make demo` (the main job) and `make test`. Both build .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
OUT ?= out/demo

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

EXAMPLES := src/sg2image/examples/shapes.json
DEPTH_EXAMPLES := src/sg2image/examples/shapes-depth.json

# Generation with the shipped Shapes model (each image also drawn beside its graph, in
# $(OUT)/with_graph), then the Shapes oracle's verdict on the generated images; the same
# for depth-order graphs ("in front of" / "behind") with the shipped depth model.
demo: $(STAMP)
	$(VENV)/bin/sg2image generate $(EXAMPLES) -o $(OUT) --with-graph
	$(VENV)/bin/sg2image shapes check $(EXAMPLES) $(OUT)
	$(VENV)/bin/sg2image generate $(DEPTH_EXAMPLES) --model shapes-depth -o $(OUT)/depth --with-graph
	$(VENV)/bin/sg2image shapes check $(DEPTH_EXAMPLES) $(OUT)/depth

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) out
