# deepdive: `make pretrain` trains the default tiny model on the CPU, `make sft` turns it into an assistant,
# `make chat` talks to it; `make test` runs the test suite.
# Both set up .venv from a bare python3 first. Variables: RECIPE (a folder of recipes/), ARGS (extra recipe
# overrides, e.g. ARGS="--max_steps 50"), ACCELERATE (a file of accelerate_configs/, without .yaml).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RECIPE ?= tiny
ARGS ?=
ACCELERATE ?= cpu
LAUNCH := $(BIN)/accelerate launch --config_file accelerate_configs/$(ACCELERATE).yaml
RUN_DIR := runs/$(RECIPE)
PROMPT ?= ROMEO:

.PHONY: install pretrain sft grpo chat sample test style quality clean

install: $(STAMP)

# torch is installed on its own first, pinned: on a CPU machine that takes the CPU build, and nothing later
# pulls in a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

pretrain: $(STAMP)
	$(LAUNCH) recipes/pretrain.py --config recipes/$(RECIPE)/pretrain.yaml $(ARGS)

sft: $(STAMP)
	$(LAUNCH) recipes/sft.py --config recipes/$(RECIPE)/sft.yaml $(ARGS)

grpo: $(STAMP)
	$(LAUNCH) recipes/grpo.py --config recipes/$(RECIPE)/grpo.yaml $(ARGS)

chat: $(STAMP)
	$(BIN)/deepdive chat --model $(RUN_DIR)/sft

sample: $(STAMP)
	$(BIN)/deepdive sample --model $(RUN_DIR)/base --prompt "$(PROMPT)"

test: $(STAMP)
	$(BIN)/python -m pytest tests $(ARGS)

style: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

quality: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
