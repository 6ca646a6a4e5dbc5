"""Model cards: a `README.md` for every run folder, written from the run's own facts.

A card follows the Hub's conventions: YAML metadata (license, `base_model`, `datasets`, tags and a
`model-index` with the evaluation results) and prose on how the model was trained, with which recipe and
data, what it is for and where it fails. Nothing in it is typed by hand: it is rebuilt from the folder's
`metrics.json`, `eval.json`, `recipe.yaml` and `config.json` each time a recipe finishes, `deepdive eval`
runs or a folder is pushed.
"""

import os
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from deepdive.configs import GRPOArguments, SFTArguments, without_secrets
from deepdive.data import DATA_CARDS_DIR
from deepdive.modeling import check_model_folder, is_hub_id
from deepdive.records import read_record
from deepdive.tasks import TASKS


STAGES = {
    "pretrain": ("base model", "pretraining", "a token simulator: it continues text in the style of its corpus"),
    "sft": ("assistant", "supervised fine-tuning", "an assistant that answers in conversations"),
    "grpo": (
        "assistant after RL",
        "reinforcement learning (GRPO)",
        "an assistant that practised on checkable problems",
    ),
    "reward": (
        "reward model",
        "reward modelling",
        "a reward model: it scores a reply by how the person whose rankings it learnt would rank it",
    ),
    "rlhf": (
        "assistant after RLHF",
        "reinforcement learning from human feedback (GRPO against a reward model)",
        "an assistant that practised writing what a reward model, trained on rankings, scores high",
    ),
    "dpo": (
        "assistant after DPO",
        "direct preference optimization (DPO)",
        "an assistant trained to prefer the ranked-better of pairs of its own replies",
    ),
}
TASK_CARDS = {name: task.card for name, task in TASKS.items()}
DEFAULT_TASKS = {"sft": SFTArguments().tasks, "grpo": GRPOArguments().tasks}  # a recipe that names no tasks
LICENSE = "apache-2.0"


def shown_path(text: str) -> str:
    """A local absolute path as a card or a commit message shows it: relative to the working directory when it lies
    there, else its last part, so that nothing published says where a user keeps their files (`/home/alice/...`).
    Other text (a Hub id, a relative path, a prompt) is returned as it is."""
    if not os.path.isabs(text) or len(Path(text).parts) < 3 or any(char.isspace() for char in text):
        return text
    path = Path(text)
    if path.is_relative_to(Path.cwd()) and path != Path.cwd():
        return path.relative_to(Path.cwd()).as_posix()
    return path.name


def shown_paths(value):
    """`value` (a recipe, or one of its fields) with every local absolute path in it as `shown_path` shows it."""
    if isinstance(value, str):
        return shown_path(value)
    if isinstance(value, list):
        return [shown_paths(item) for item in value]
    if isinstance(value, dict):
        return {key: shown_paths(item) for key, item in value.items()}
    return value


def hub_id_of(model_name_or_path: str | None) -> str | None:
    """The Hub id a model came from: the id its local folder was pushed to, else itself when it is a Hub id (a path
    to a folder no longer there is not one)."""
    if not model_name_or_path:
        return None
    folder = Path(model_name_or_path)
    if folder.is_dir():
        return read_record(folder, "hub.json").get("repo_id")
    return model_name_or_path if is_hub_id(model_name_or_path) else None


def data_used(stage: str, recipe: dict) -> tuple[list[str], list[str]]:
    """(Hub dataset ids, deepdive data cards) a run trained on, from its recipe."""
    hub = [recipe["dataset_name"]] if recipe.get("dataset_name") else []
    if hub or recipe.get("data_files"):
        return hub, []
    if stage == "pretrain":
        return [], ["shakespeare"]
    cards = [TASK_CARDS[task] for task in recipe.get("tasks", DEFAULT_TASKS.get(stage, [])) if task in TASK_CARDS]
    verse = recipe.get("num_verse_examples") or "verse" in recipe.get("tasks", []) or recipe.get("prefs_dir")
    return [], cards + (["verse"] if verse else [])


def eval_results(results: dict) -> list[EvalResult]:
    """The `model-index` entries: validation bits per byte for a base model, held-out accuracies for a chat one."""
    entries = []
    if "val_bits_per_byte" in results:
        entries.append(
            EvalResult(
                task_type="text-generation",
                dataset_type="shakespeare",
                dataset_name="Shakespeare plays, validation split (4 held-out plays)",
                dataset_split="validation",
                metric_type="bits_per_byte",
                metric_name="bits per byte",
                metric_value=round(results["val_bits_per_byte"], 4),
            )
        )
    for key, value in sorted(results.items()):
        task, _, metric = key.partition("_")
        if task in TASK_CARDS and metric in ("accuracy", "pass@1_sampled", "pass@8_sampled"):
            entries.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type=f"deepdive/{task}",
                    dataset_name=f"{task} (deepdive synthetic task), held-out prompts",
                    dataset_split="test",
                    metric_type=metric.replace("_sampled", "") if metric != "accuracy" else "accuracy",
                    metric_name=metric.replace("_", " ") + (" (greedy)" if metric == "accuracy" else ""),
                    metric_value=round(value, 4),
                )
            )
    return entries


def _metrics_table(results: dict) -> str:
    rows = [
        f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
        for key, value in sorted(results.items())
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


def build_model_card(folder: str | Path, repo_id: str | None = None) -> ModelCard:
    """The model card of a finished run folder, from the facts the run wrote there."""
    folder = Path(folder)
    metrics, evaluation = read_record(folder, "metrics.json"), read_record(folder, "eval.json")
    recipe, config = read_record(folder, "recipe.yaml"), read_record(folder, "config.json")
    adapter = read_record(folder, "adapter_config.json")
    stage = metrics.get("stage") or evaluation.get("stage") or "pretrain"
    kind, stage_name, what = STAGES.get(stage, STAGES["pretrain"])
    parent = adapter.get("base_model_name_or_path") or recipe.get("model_name_or_path")
    base_model = hub_id_of(parent)
    hub_datasets, cards = data_used(stage, recipe)
    results = {**metrics, **evaluation}
    name = repo_id or f"deepdive-{folder.parent.name}-{folder.name}"
    tags = ["deepdive", "text-classification" if stage == "reward" else "text-generation"]
    tags.append(stage_name.split(" (")[0].replace(" ", "-"))
    tags += ["trl", stage] if stage in ("sft", "grpo", "reward", "rlhf", "dpo") else []
    tags += ["peft", "lora"] if adapter else []
    data = ModelCardData(
        license=LICENSE,
        base_model=base_model,
        datasets=hub_datasets or [f"deepdive/{card}" for card in cards] or None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-classification" if stage == "reward" else "text-generation",
        tags=tags,
        model_name=name,
        eval_results=eval_results(results) or None,
    )
    parameters = results.get("parameters")
    shape = (
        f"{config.get('num_hidden_layers')} layers, width {config.get('hidden_size')}, "
        f"{config.get('num_attention_heads')} heads, vocabulary {config.get('vocab_size')}, "
        f"context {config.get('max_position_embeddings')} tokens"
        if config
        else "see `config.json`"
    )
    lines = [
        f"# {name}",
        "",
        f"{'An' if kind[0] in 'aeiou' else 'A'} {kind} made with deepdive's {stage_name} stage: {what}.",
        f"{config.get('model_type', 'causal LM').capitalize()} architecture, "
        + (f"{parameters / 1e6:.2f}M parameters, " if parameters else "")
        + f"{shape}.",
        "",
        "## How it was trained",
        "",
    ]
    if parent:
        lines.append(
            f"- Starting point: `{shown_path(parent)}`"
            + (
                f" ([{base_model}](https://huggingface.co/{base_model}))"
                if base_model and base_model != parent
                else ""
            )
            + "."
        )
    elif stage == "pretrain":
        lines.append("- Starting point: random weights (pretrained from scratch).")
    if cards:
        links = ", ".join(f"[{card}](data_cards/{card}.md)" for card in cards)
        lines.append(f"- Data: {links} (generated or built locally; each data card gives source, license and split).")
    elif hub_datasets:
        lines.append(f"- Data: {', '.join(f'[{d}](https://huggingface.co/datasets/{d})' for d in hub_datasets)}.")
    elif recipe.get("data_files"):
        lines.append(f"- Data: local files {', '.join(shown_path(str(path)) for path in recipe['data_files'])}.")
    if recipe.get("probe_dir"):
        lines.append(
            f"- Second pass after a knowledge probe (`{shown_path(recipe['probe_dir'])}`, with its data card): the "
            'characters the model knew answered with their play, the others with an honest "I don\'t know".'
        )
    facts = [
        ("training time", f"{results['train_seconds'] / 60:.1f} min" if "train_seconds" in results else None),
        ("tokens seen", f"{results['train_tokens']:,}" if "train_tokens" in results else None),
        ("final train loss", f"{results['train_loss']:.4f}" if "train_loss" in results else None),
        ("hardware", results.get("hardware")),
    ]
    lines += [f"- {label.capitalize()}: {value}." for label, value in facts if value]
    if adapter:
        lines.append(
            f"- LoRA adapter (rank {adapter.get('r')}, alpha {adapter.get('lora_alpha')}) on `{shown_path(parent)}`; "
            "`deepdive merge` folds it into the base weights."
        )
    if recipe:
        lines += [
            "",
            "The recipe, as run (`recipe.yaml`):",
            "",
            "```yaml",
            yaml.safe_dump(shown_paths(without_secrets(recipe)[0]), sort_keys=False).strip(),
            "```",
        ]
    lines += ["", "## Results", "", _metrics_table(results), ""]
    lines += _usage(stage, repo_id or shown_path(str(folder)))
    lines += [
        "",
        "## Intended use",
        "",
        "Learning how assistants like ChatGPT are built, stage by stage, and experimenting with recipes. It is a",
        "small model trained for minutes: not for any decision, advice or production use.",
        "",
        "## Limitations",
        "",
        "- **Hallucination.** It produces fluent text whether or not it knows the answer. Facts it was not trained",
        '  on are made up; the Shakespeare task teaches it to say "I don\'t know" for unknown names, but only for',
        "  questions shaped like its training data.",
        "- **Jagged intelligence.** Its skills are uneven and brittle: it can add most numbers column by column",
        "  and still fail the next one, and it sees tokens, not letters, so spelling and counting letters fail",
        "  in ways a person would not. Check every answer that matters.",
        "- **Narrow.** Its knowledge is its training data (see the data cards): English, mostly early-modern verse",
        "  and a few synthetic task families. Outside them it answers with plausible nonsense.",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def _usage(stage: str, model_id: str) -> list[str]:
    if stage == "pretrain":
        code = [
            "from transformers import pipeline",
            "",
            f'generator = pipeline("text-generation", model="{model_id}")',
            'print(generator("ROMEO:", max_new_tokens=80, do_sample=True, temperature=0.8)[0]["generated_text"])',
        ]
    elif stage == "reward":
        code = [
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "",
            f'tokenizer = AutoTokenizer.from_pretrained("{model_id}")',
            f'model = AutoModelForSequenceClassification.from_pretrained("{model_id}")',
            'messages = [{"role": "user", "content": "Write a line of verse about the moon."},',
            '            {"role": "assistant", "content": "The moon doth shine upon the silent sea."}]',
            'inputs = tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)',
            "print(model(**inputs).logits[0, 0].item())  # higher: a line the labeler would rank higher",
        ]
    else:
        code = [
            "from transformers import pipeline",
            "",
            f'chat = pipeline("text-generation", model="{model_id}")',
            'messages = [{"role": "user", "content": "What is 347 + 286?"}]',
            'print(chat(messages, max_new_tokens=120, do_sample=False)[0]["generated_text"][-1]["content"])',
        ]
    return ["## How to use", "", "```python", *code, "```"]


def write_model_card(folder: str | Path, repo_id: str | None = None) -> Path:
    """Write `README.md` (the model card) into a run folder, never into a folder that holds no model; return its
    path."""
    path = check_model_folder(folder) / "README.md"
    build_model_card(folder, repo_id).save(path)
    return path


def data_card_paths(folder: str | Path) -> list[Path]:
    """The deepdive data cards a run folder's card links to."""
    metrics, recipe = read_record(folder, "metrics.json"), read_record(folder, "recipe.yaml")
    _, cards = data_used(metrics.get("stage", "pretrain"), recipe)
    return [DATA_CARDS_DIR / f"{card}.md" for card in cards]
