# Quick start:  make demo   (set up, synthetic data, train + evaluate three runs, print a Table 2)
#               make test   (set up, run the whole test suite)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   := data/synthetic
RUNS   := runs/demo
DEMO_RUNS := erfnet cyclegan quant2

.PHONY: setup demo test lint clean

setup: $(STAMP)

# torch first, pinned: the CPU wheel of 2.13.0 is on local disk; an unpinned torch would pull CUDA builds.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(DATA)/leftImg8bit: | $(STAMP)
	$(BIN)/cycleseg make-synthetic $(DATA)

demo: $(STAMP) $(DATA)/leftImg8bit
	@for run in $(DEMO_RUNS); do \
	  $(BIN)/cycleseg train configs/demo/$$run.yaml --data $(DATA) --out $(RUNS)/$$run --overwrite || exit 1; \
	  $(BIN)/cycleseg evaluate $(RUNS)/$$run --data $(DATA) > /dev/null || exit 1; \
	done
	@echo
	@$(BIN)/cycleseg table $(addprefix $(RUNS)/,$(DEMO_RUNS))

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) $(DATA) $(RUNS) build src/*.egg-info
