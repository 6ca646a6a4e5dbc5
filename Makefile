# deepdive: `make all` runs the whole pipeline (pretrain -> sft -> grpo -> eval -> report) on the default tiny
# recipe, skipping stages already finished; `make pretrain`, `make sft`, `make grpo` run one stage; `make chat`
# talks to the assistant; `make test` runs the test suite; `make bench` measures speed. Every target sets up
# .venv from a bare python3 first.
# Variables: RECIPE (a folder of recipes/), ARGS (extra overrides for one stage, e.g. ARGS="--max_steps 50"),
# ACCELERATE (a file of accelerate_configs/, without .yaml), STAGE and HUB_MODEL_ID (and PRIVATE=1) for push.

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
STAGE ?= sft
HUB_MODEL_ID ?=
PRIVATE ?=
STAGES := base sft grpo

.PHONY: all install pretrain sft grpo eval report push chat sample test bench style quality clean

install: $(STAMP)

# torch is installed on its own first, pinned: on a CPU machine that takes the CPU build, and nothing later
# pulls in a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# `make all`: each stage is a file target on the record it writes last (metrics.json), so a finished stage
# is skipped, a crashed one runs again from its last complete checkpoint, and one whose recipe (or input
# stage) changed is trained over (REDO adds --overwrite_output_dir only when a finished record exists).
REDO = $(if $(wildcard $@),--overwrite_output_dir true)
all: $(RUN_DIR)/report.md

$(RUN_DIR)/base/metrics.json: recipes/$(RECIPE)/pretrain.yaml | $(STAMP)
	$(LAUNCH) recipes/pretrain.py --config $< $(REDO)

$(RUN_DIR)/sft/metrics.json: recipes/$(RECIPE)/sft.yaml $(RUN_DIR)/base/metrics.json
	$(LAUNCH) recipes/sft.py --config $< $(REDO)

$(RUN_DIR)/grpo/metrics.json: recipes/$(RECIPE)/grpo.yaml $(RUN_DIR)/sft/metrics.json
	$(LAUNCH) recipes/grpo.py --config $< $(REDO)

$(RUN_DIR)/%/eval.json: $(RUN_DIR)/%/metrics.json
	$(BIN)/deepdive eval --model $(RUN_DIR)/$*

$(RUN_DIR)/report.md: $(foreach stage,$(STAGES),$(RUN_DIR)/$(stage)/eval.json)
	$(BIN)/deepdive report --run $(RUN_DIR)

pretrain: $(STAMP)
	$(LAUNCH) recipes/pretrain.py --config recipes/$(RECIPE)/pretrain.yaml $(ARGS)

sft: $(STAMP)
	$(LAUNCH) recipes/sft.py --config recipes/$(RECIPE)/sft.yaml $(ARGS)

grpo: $(STAMP)
	$(LAUNCH) recipes/grpo.py --config recipes/$(RECIPE)/grpo.yaml $(ARGS)

# Evaluate every finished stage of the run (eval.json beside each model), then gather the report card.
eval: $(STAMP)
	@for stage in $(STAGES); do \
		if [ -f $(RUN_DIR)/$$stage/metrics.json ]; then $(BIN)/deepdive eval --model $(RUN_DIR)/$$stage || exit 1; fi; \
	done

report: $(STAMP)
	$(BIN)/deepdive report --run $(RUN_DIR)

# make push STAGE=sft HUB_MODEL_ID=your-name/deepdive-tiny-sft [PRIVATE=1]; the token comes from HF_TOKEN or
# `hf auth login` and is never written anywhere.
push: $(STAMP)
	@test -n "$(HUB_MODEL_ID)" || { echo "error: HUB_MODEL_ID: give the Hub repo, e.g. make push STAGE=sft HUB_MODEL_ID=you/deepdive-tiny-sft"; exit 2; }
	$(BIN)/deepdive push --model $(RUN_DIR)/$(if $(filter pretrain,$(STAGE)),base,$(STAGE)) --repo_id $(HUB_MODEL_ID) $(if $(PRIVATE),--private)

# Talk to the latest chat stage: grpo when it has finished, else sft.
chat: $(STAMP)
	$(BIN)/deepdive chat --model $(RUN_DIR)/$(if $(wildcard $(RUN_DIR)/grpo/metrics.json),grpo,sft)

sample: $(STAMP)
	$(BIN)/deepdive sample --model $(RUN_DIR)/base --prompt "$(PROMPT)"

test: $(STAMP)
	$(BIN)/python -m pytest tests $(ARGS)

# Speed: deepdive against a bare PyTorch loop, settings, data preparation, GRPO rollouts, cost scaling; tables on
# stdout, figures in bench/results/<name>.json. One benchmark: make bench ARGS=trainer_overhead
bench: $(STAMP)
	$(BIN)/python -m bench.run $(ARGS)

style: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

quality: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
