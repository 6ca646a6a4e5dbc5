# deepdive: `make all` runs the whole pipeline (pretrain -> sft -> grpo -> eval -> report) on the default tiny
# recipe, skipping stages already finished; `make pretrain`, `make sft`, `make grpo` run one stage; `make chat`
# talks to the assistant (`make chat-tools`: the one `make tools` trained, tools on), `make honest` probes what it
# knows and teaches it to say "I don't know" for the rest, `make rlhf` runs RLHF (a reward model learnt from
# rankings, GRPO against it, DPO beside it) on lines of verse, `make serve` serves it (an
# OpenAI-compatible API and a chat page), `make gguf` exports it for llama.cpp apps; `make seeds` runs the
# pipeline once per seed and writes the spread over seeds; `make test` runs the test suite; `make bench` measures
# speed. Every target sets up .venv from a bare python3 first.
# Variables: RECIPE (a folder of recipes/), ARGS (extra overrides for one stage, e.g. ARGS="--max_steps 50"),
# SEED (the seed of every stage, run into runs/<recipe>/seed-<SEED>), SEEDS (the seeds of `make seeds`), RUNS and
# RESULTS (where runs and `make seeds` tables go), ACCELERATE (a file of accelerate_configs/, without .yaml),
# STAGE and HUB_MODEL_ID (and PRIVATE=1) for push, PORT for serve, OUT_TYPE (f32, f16, q8_0) for gguf.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RECIPE ?= tiny
ARGS ?=
ACCELERATE ?= cpu
LAUNCH := $(BIN)/accelerate launch --config_file accelerate_configs/$(ACCELERATE).yaml
SEED ?=
SEEDS ?= 1 2 3
RUNS ?= runs
RESULTS ?= results
# The run folder: runs/<recipe> (the recipes' own output_dir), or runs/<recipe>/seed-<SEED> when SEED is given.
RUN_DIR := $(RUNS)/$(RECIPE)$(if $(SEED),/seed-$(SEED))
# $(call STAGE_ARGS,folder,parent recipe,parent folder): the overrides that point a stage at RUN_DIR when it is not
# the recipes' own folder: the seed, the output folder, and the stage it starts from when this recipe folder trains
# that one too (a recipe that starts from a Hub model keeps it). The default run passes none of them.
STAGE_ARGS = $(if $(filter-out runs/$(RECIPE),$(RUN_DIR)),$(if $(SEED),--seed $(SEED) )--output_dir \
	$(RUN_DIR)/$(1)$(if $(wildcard recipes/$(RECIPE)/$(2).yaml), --model_name_or_path $(RUN_DIR)/$(3)))
PROMPT ?= ROMEO:
STAGE ?= sft
HUB_MODEL_ID ?=
PRIVATE ?=
STAGES := base sft grpo

.PHONY: all seeds tools honest rlhf rlhf-long install pretrain sft grpo eval report push chat chat-tools serve gguf sample test chromium bench \
	gpu-check style quality clean

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
	$(LAUNCH) recipes/pretrain.py --config $< $(call STAGE_ARGS,base) $(REDO)

$(RUN_DIR)/sft/metrics.json: recipes/$(RECIPE)/sft.yaml $(RUN_DIR)/base/metrics.json
	$(LAUNCH) recipes/sft.py --config $< $(call STAGE_ARGS,sft,pretrain,base) $(REDO)

$(RUN_DIR)/grpo/metrics.json: recipes/$(RECIPE)/grpo.yaml $(RUN_DIR)/sft/metrics.json
	$(LAUNCH) recipes/grpo.py --config $< $(call STAGE_ARGS,grpo,sft,sft) $(REDO)

# `make tools`: SFT again from the same base with its own recipe (recipes/<recipe>/sft-tools.yaml): half the
# conversations asked with the python and search tools offered (the model calls one and answers from its result),
# after a repeat-after-me drill that teaches it to copy words from the question into its calls; then its
# evaluation with and without tools and the report card with its column. Not part of `make all`.
tools: $(RUN_DIR)/sft-tools/eval.json
	$(BIN)/deepdive report --run $(RUN_DIR)

$(RUN_DIR)/sft-tools/metrics.json: recipes/$(RECIPE)/sft-tools.yaml $(RUN_DIR)/base/metrics.json
	$(LAUNCH) recipes/sft.py --config $< $(call STAGE_ARGS,sft-tools,pretrain,base) $(REDO)

# `make honest`: probe what the SFT model knows (runs/<recipe>/probe: probe.jsonl and its data card), then a second
# SFT pass from it that answers the characters it knows and declines the others (sft-honest), its evaluation and the
# report card. Not part of `make all`.
honest: $(RUN_DIR)/sft-honest/eval.json
	$(BIN)/deepdive report --run $(RUN_DIR)

$(RUN_DIR)/probe/probe.jsonl: $(RUN_DIR)/sft/metrics.json
	$(BIN)/deepdive probe --model $(RUN_DIR)/sft --output $(RUN_DIR)/probe

HONEST_ARGS = $(if $(filter-out runs/$(RECIPE),$(RUN_DIR)),$(if $(SEED),--seed $(SEED) )--output_dir \
	$(RUN_DIR)/sft-honest --model_name_or_path $(RUN_DIR)/sft --probe_dir $(RUN_DIR)/probe)
$(RUN_DIR)/sft-honest/metrics.json: recipes/$(RECIPE)/sft-honest.yaml $(RUN_DIR)/probe/probe.jsonl
	$(LAUNCH) recipes/sft.py --config $< $(HONEST_ARGS) $(REDO)

# `make rlhf`: the lecture's RLHF on lines of verse, which no checker can grade. A short SFT pass teaches the verse
# task (sft-verse), the model's own lines ranked by the simulated labeler become preference pairs (prefs), a reward
# model learns the rankings (reward), GRPO practises against the reward model (rlhf) and DPO trains on the same
# pairs (dpo); then the report card. RLHF_STEPS sets the RLHF stage's length. Not part of `make all`.
RLHF_STEPS ?=
rlhf: $(RUN_DIR)/rlhf/metrics.json $(RUN_DIR)/dpo/metrics.json
	$(BIN)/deepdive report --run $(RUN_DIR)

# `make rlhf-long`: RLHF from the same verse SFT model and reward model for RLHF_LONG_STEPS steps with the KL
# penalty RLHF_LONG_BETA (0: off, the policy free to drift past the point where it games the reward model), in
# $(RUN_DIR)/long/rlhf; its report card (the two scores per step, plotted) becomes the record in
# $(RESULTS)/rlhf/long/ that the README's RLHF section shows. With RLHF_LONG_BETA=0.05 (a sixth of the tiny recipe's 0.3)
# the run and its record are long-beta0.05.
RLHF_LONG_STEPS ?= 300
RLHF_LONG_BETA ?= 0
RLHF_LONG = long$(if $(filter-out 0,$(RLHF_LONG_BETA)),-beta$(RLHF_LONG_BETA))
rlhf-long: recipes/$(RECIPE)/rlhf.yaml $(RUN_DIR)/reward/metrics.json
	$(LAUNCH) recipes/grpo.py --config $< --model_name_or_path $(RUN_DIR)/sft-verse --reward_model $(RUN_DIR)/reward \
		--output_dir $(RUN_DIR)/$(RLHF_LONG)/rlhf --max_steps $(RLHF_LONG_STEPS) --beta $(RLHF_LONG_BETA) \
		$(if $(SEED),--seed $(SEED) )--overwrite_output_dir true
	$(BIN)/deepdive report --run $(RUN_DIR)/$(RLHF_LONG)
	rm -rf $(RESULTS)/rlhf/$(RLHF_LONG) && mkdir -p $(RESULTS)/rlhf/$(RLHF_LONG)
	cp -r $(RUN_DIR)/$(RLHF_LONG)/report.md $(RUN_DIR)/$(RLHF_LONG)/report $(RESULTS)/rlhf/$(RLHF_LONG)/

# $(call PAIR_ARGS,folder,starting stage): the overrides that point an RLHF stage at RUN_DIR, as STAGE_ARGS does
PAIR_ARGS = $(if $(filter-out runs/$(RECIPE),$(RUN_DIR)),$(if $(SEED),--seed $(SEED) )--output_dir $(RUN_DIR)/$(1) \
	--model_name_or_path $(RUN_DIR)/$(2) $(if $(filter rlhf,$(1)),--reward_model,--prefs_dir) \
	$(RUN_DIR)/$(if $(filter rlhf,$(1)),reward,prefs))
# VERSE_FROM: the SFT model the verse pass starts from, this run's own by default. `make seeds SEEDS_TARGETS=rlhf
# VERSE_FROM=runs/tiny/sft` varies the seed of the RLHF stages alone, every seed starting from that one SFT model.
VERSE_FROM ?= $(RUN_DIR)/sft
VERSE_ARGS = $(if $(filter-out runs/$(RECIPE),$(RUN_DIR))$(filter-out runs/$(RECIPE)/sft,$(VERSE_FROM)),$(if \
	$(SEED),--seed $(SEED) )--output_dir $(RUN_DIR)/sft-verse --model_name_or_path $(VERSE_FROM))
$(RUN_DIR)/sft-verse/metrics.json: recipes/$(RECIPE)/sft-verse.yaml $(VERSE_FROM)/metrics.json
	$(LAUNCH) recipes/sft.py --config $< $(VERSE_ARGS) $(REDO)

$(RUN_DIR)/prefs/pairs.jsonl: $(RUN_DIR)/sft-verse/metrics.json
	$(BIN)/deepdive prefs --model $(RUN_DIR)/sft-verse --output $(RUN_DIR)/prefs $(if $(SEED),--seed $(SEED))

$(RUN_DIR)/reward/metrics.json: recipes/$(RECIPE)/reward.yaml $(RUN_DIR)/prefs/pairs.jsonl
	$(LAUNCH) recipes/reward.py --config $< $(call PAIR_ARGS,reward,sft-verse) $(REDO)

$(RUN_DIR)/rlhf/metrics.json: recipes/$(RECIPE)/rlhf.yaml $(RUN_DIR)/reward/metrics.json
	$(LAUNCH) recipes/grpo.py --config $< $(call PAIR_ARGS,rlhf,sft-verse) \
		$(if $(RLHF_STEPS),--max_steps $(RLHF_STEPS)) $(REDO)

$(RUN_DIR)/dpo/metrics.json: recipes/$(RECIPE)/dpo.yaml $(RUN_DIR)/prefs/pairs.jsonl
	$(LAUNCH) recipes/dpo.py --config $< $(call PAIR_ARGS,dpo,sft-verse) $(REDO)

$(RUN_DIR)/%/eval.json: $(RUN_DIR)/%/metrics.json
	$(BIN)/deepdive eval --model $(RUN_DIR)/$*

$(RUN_DIR)/report.md: $(foreach stage,$(STAGES),$(RUN_DIR)/$(stage)/eval.json)
	$(BIN)/deepdive report --run $(RUN_DIR)

# `make seeds SEEDS="1 2 3"`: `make all SEED=<s>` for each seed in turn (finished stages skipped), then the spread
# over seeds, one table of every seed's records: results/<recipe>-seeds.{json,md}, and runs/<recipe>/seeds.md.
# SEEDS_TARGETS="all tools" also runs `make tools` per seed: the table then has the SFT-with-tools rows too. The
# command the table names to regenerate it keeps VERSE_FROM and RESULTS when they were given.
SEEDS_TARGETS ?= all
SEEDS_KNOBS := $(strip $(foreach knob,VERSE_FROM RESULTS,$(if $(filter command line,$(origin $(knob))),$(knob)=$($(knob)))))
SEEDS_COMMAND := make seeds RECIPE=$(RECIPE) SEEDS="$(strip $(SEEDS))"$(if $(filter-out all,$(SEEDS_TARGETS)), \
	SEEDS_TARGETS="$(strip $(SEEDS_TARGETS))")$(if $(SEEDS_KNOBS), $(SEEDS_KNOBS))
seeds: $(STAMP)
	@for seed in $(SEEDS); do $(MAKE) --no-print-directory $(SEEDS_TARGETS) SEED=$$seed || exit 1; done
	$(BIN)/deepdive seeds --runs $(foreach seed,$(SEEDS),$(RUNS)/$(RECIPE)/seed-$(seed)) \
		--output $(RESULTS)/$(RECIPE)-seeds --generated_by '$(SEEDS_COMMAND)'

pretrain: $(STAMP)
	$(LAUNCH) recipes/pretrain.py --config recipes/$(RECIPE)/pretrain.yaml $(call STAGE_ARGS,base) $(ARGS)

sft: $(STAMP)
	$(LAUNCH) recipes/sft.py --config recipes/$(RECIPE)/sft.yaml $(call STAGE_ARGS,sft,pretrain,base) $(ARGS)

grpo: $(STAMP)
	$(LAUNCH) recipes/grpo.py --config recipes/$(RECIPE)/grpo.yaml $(call STAGE_ARGS,grpo,sft,sft) $(ARGS)

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
CHAT_STAGE = $(if $(wildcard $(RUN_DIR)/grpo/metrics.json),grpo,sft)
chat: $(STAMP)
	$(BIN)/deepdive chat --model $(RUN_DIR)/$(CHAT_STAGE)

chat-tools: $(STAMP)
	$(BIN)/deepdive chat --model $(RUN_DIR)/sft-tools --tools

# The latest chat stage behind an OpenAI-compatible API, with a chat page at http://127.0.0.1:$(PORT)/
PORT ?= 8000
serve: $(STAMP)
	$(BIN)/deepdive serve --model $(RUN_DIR)/$(CHAT_STAGE) --port $(PORT)

# The latest chat stage as one GGUF file for llama.cpp-based apps: runs/tiny/<stage>-<OUT_TYPE>.gguf
OUT_TYPE ?= f16
gguf: $(STAMP)
	$(BIN)/deepdive export --model $(RUN_DIR)/$(CHAT_STAGE) --gguf $(RUN_DIR)/$(CHAT_STAGE)-$(OUT_TYPE).gguf \
		--out_type $(OUT_TYPE)

sample: $(STAMP)
	$(BIN)/deepdive sample --model $(RUN_DIR)/base --prompt "$(PROMPT)"

# The chat page's tests drive a real browser: Debian's chromium package, installed here when it is missing.
test: $(STAMP) chromium
	$(BIN)/python -m pytest tests $(ARGS)

chromium:
	@command -v chromium >/dev/null || { apt-get update && apt-get install -y --no-install-recommends chromium; } \
		|| { echo "error: chromium: install Debian's chromium package (as root: apt-get install chromium)"; exit 2; }

# Speed: deepdive against a bare PyTorch loop, settings, data preparation, GRPO rollouts, cost scaling; tables on
# stdout, figures in bench/results/<name>.json. One benchmark: make bench ARGS=trainer_overhead
bench: $(STAMP)
	$(BIN)/python -m bench.run $(ARGS)

# The GPU paths (one-GPU pipeline, d12 throughput and MFU, FSDP, vLLM) in a few minutes, one table. ARGS=--cpu
# runs the same checks shrunk on the CPU.
gpu-check: $(STAMP)
	$(BIN)/python -m bench.gpu_check $(ARGS)

style: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

quality: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
