# The two README commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean demo-model baseline-model

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hanet demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) hanet-data .pytest_cache .ruff_cache

# The bundled demo model: a seeded, documented run (22 to 34 minutes on the 2-core VMs measured).
DEMO_MODEL := model/weights/hanet-tiny-demo.pt
DEMO_DATA := hanet-data/synth-2000-seed0
TRAIN_ARGS := --arch tiny --epochs 30 --batch-size 64 --lr 5e-4 --warmup-epochs 30 --patience 10 --seed 0

$(DEMO_DATA)/manifest.json: $(STAMP)
	$(BIN)/hanet synth --out $(DEMO_DATA) --videos 2000 --seed 0

demo-model: $(DEMO_DATA)/manifest.json
	$(BIN)/hanet train --data $(DEMO_DATA) --out $(DEMO_MODEL) --work-dir hanet-data/train-demo --save-half $(TRAIN_ARGS)

# The global-only (meanP) baseline with the same backbone, data and budget.
baseline-model: $(DEMO_DATA)/manifest.json
	$(BIN)/hanet train --data $(DEMO_DATA) --out hanet-data/baseline-global.pt --work-dir hanet-data/train-baseline --objective global --save-half $(TRAIN_ARGS)
