# The two README commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean demo-model baseline-model control-model long-model

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

# The bundled demo model: a seeded, documented run (its time and figures: docs/benchmarks.md).
DEMO_MODEL := model/weights/hanet-tiny-demo.pt
DEMO_DATA := hanet-data/synth-2000-seed0
TRAIN_ARGS := --arch tiny --epochs 30 --batch-size 64 --lr 5e-4 --warmup-epochs 30 --patience 10 --seed 0
# HANet's video input: frame features plus a motion stream (in the place of the reference's
# I3D features), the temporal convolution feeding all three levels. The baseline has neither:
# meanP pools the frames as they are.
HANET_ARGS := --motion-levels all --motion-stream 64

$(DEMO_DATA)/manifest.json: $(STAMP)
	$(BIN)/hanet synth --out $(DEMO_DATA) --videos 2000 --seed 0

demo-model: $(DEMO_DATA)/manifest.json
	$(BIN)/hanet train --data $(DEMO_DATA) --out $(DEMO_MODEL) --work-dir hanet-data/train-demo --save-half $(TRAIN_ARGS) $(HANET_ARGS)

# The global-only (meanP) baseline with the same backbone, data and budget.
baseline-model: $(DEMO_DATA)/manifest.json
	$(BIN)/hanet train --data $(DEMO_DATA) --out hanet-data/baseline-global.pt --work-dir hanet-data/train-baseline --objective global --save-half $(TRAIN_ARGS)

# A control: meanP over HANet's motion input (the motion stream and temporal convolution train,
# the pooling stays the mean, the score the global one): what the motion input gives alone.
control-model: $(DEMO_DATA)/manifest.json
	$(BIN)/hanet train --data $(DEMO_DATA) --out hanet-data/control-global-motion.pt --work-dir hanet-data/train-control --objective global-motion --save-half $(TRAIN_ARGS) $(HANET_ARGS)

# The demo model fine-tuned for long videos (issue 17): windows of other long videos (seed 1),
# cut where the indexer cuts and mixed with the demo clips (less any window showing what the
# demo corpus holds out), each decoded as the indexer embeds a unit.
LONG_DATA := hanet-data/long80-seed1
WINDOWS_DATA := hanet-data/windows80-seed1-mix

$(LONG_DATA)/manifest.json: $(STAMP)
	$(BIN)/hanet synth --out $(LONG_DATA) --videos 80 --seed 1 --long --min-minutes 1 --max-minutes 3

$(WINDOWS_DATA)/manifest.json: $(LONG_DATA)/manifest.json $(DEMO_DATA)/manifest.json
	$(BIN)/python -m corpus.windows $(LONG_DATA) $(WINDOWS_DATA) --mix $(DEMO_DATA)

long-model: $(WINDOWS_DATA)/manifest.json
	$(BIN)/hanet train --data $(WINDOWS_DATA) --out hanet-data/hanet-tiny-long.pt --work-dir hanet-data/train-long --from-checkpoint $(DEMO_MODEL) --served-frames --save-half --epochs 12 --batch-size 64 --lr 1e-4 --warmup-epochs 30 --patience 10 --seed 0
