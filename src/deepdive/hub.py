"""Moving models between deepdive runs and the Hugging Face ecosystem: merging adapters, pushing to the Hub.

A LoRA run saves only its adapter (a few hundred kB) next to a pointer to its base model. `merge_adapter`
folds the adapter into the base weights and writes a plain Hugging Face model folder, tokenizer and chat
template included, which loads anywhere without `peft`.
"""

import json
from pathlib import Path

import yaml
from huggingface_hub import CommitOperationAdd, HfApi, get_token
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

from deepdive.cards import data_card_paths, hub_id_of, shown_path, shown_paths, write_model_card
from deepdive.errors import DataError, RecipeError
from deepdive.modeling import check_model_folder, is_hub_id
from deepdive.records import read_record


def merge_adapter(adapter_dir: str, output_dir: str) -> Path:
    """Merge the LoRA adapter in `adapter_dir` into its base model; save model + tokenizer to `output_dir`."""
    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise DataError(f"--adapter: {adapter_dir} holds no adapter_config.json (not a LoRA run folder)")
    model = AutoPeftModelForCausalLM.from_pretrained(adapter_dir, use_safetensors=True)
    merged = model.merge_and_unload()
    merged.save_pretrained(output_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(output_dir)
    return Path(output_dir)


# --- Pushing a finished run to the Hub ------------------------------------------------------------------------

# What a run folder uploads: the model, its tokenizer and chat template, its card and the run's own record.
# Checkpoints, TensorBoard event files and the pickled `training_args.bin` stay local.
UPLOADED = (
    "*.safetensors",
    "config.json",
    "generation_config.json",
    "adapter_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "README.md",
    "metrics.json",
    "eval.json",
    "recipe.yaml",
    "samples.jsonl",
)


def check_push_settings(repo_id: str | None, field: str = "hub_model_id", token: str | None = None) -> str:
    """One-line errors, before any training, for a push that cannot work: no or bad repo id, no token (neither
    `token`, the recipe's `hub_token`, nor one `huggingface_hub` finds itself)."""
    if not repo_id:
        raise RecipeError(f"{field}: pushing needs a Hub repo id such as 'your-name/deepdive-tiny-sft'")
    if not is_hub_id(repo_id):
        raise RecipeError(f"{field}: '{repo_id}' is not a valid Hub repo id; use 'user-or-org/name'")
    if "/" not in repo_id:
        raise RecipeError(f"{field}: '{repo_id}' needs its owner, as in 'your-name/{repo_id}'")
    if token is None and get_token() is None:
        raise RecipeError("no Hugging Face token: run `hf auth login` or set HF_TOKEN (it is never written to disk)")
    return repo_id


# The run's own records, published with their local absolute paths shown as the model card shows them
RECORDS = ("recipe.yaml", "eval.json", "metrics.json", "adapter_config.json")


def published_record(name: str, path: Path) -> bytes:
    """A record as it is uploaded: every local absolute path in it shown as `shown_path` shows it; a LoRA adapter's
    base model, when it is a local folder that was pushed, named by its Hub id so the adapter loads from the Hub."""
    text = path.read_text(encoding="utf-8")
    record = yaml.safe_load(text) if name.endswith(".yaml") else json.loads(text)
    if name == "adapter_config.json" and record.get("base_model_name_or_path"):
        base = record["base_model_name_or_path"]
        record["base_model_name_or_path"] = hub_id_of(base) or base
    record = shown_paths(record)
    if name.endswith(".yaml"):
        return yaml.safe_dump(record, sort_keys=False).encode()
    return (json.dumps(record, indent=2) + "\n").encode()


def files_to_push(folder: str | Path, report: str | Path | None = None) -> dict[str, Path]:
    """{path in the repo: local file} for a run folder, its linked data cards and the run's report card."""
    folder = Path(folder)
    files = {path.name: path for pattern in UPLOADED for path in sorted(folder.glob(pattern)) if path.is_file()}
    files.update({f"data_cards/{path.name}": path for path in data_card_paths(folder) if path.is_file()})
    if report is not None and Path(report).is_file():
        report = Path(report)
        files["report.md"] = report
        assets = report.parent / report.stem
        files.update({f"{report.stem}/{path.name}": path for path in sorted(assets.glob("*.png"))})
    return files


def push_folder(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    report: str | Path | None = None,
    token: str | None = None,
) -> str:
    """Upload a finished run folder to the Hub in one commit; return the commit URL.

    The model card is rebuilt for `repo_id` first. The token is a recipe's `hub_token` when it gave one, else the
    one `huggingface_hub` reads itself (`HF_TOKEN`, `hf auth login`); it is never logged or written, and a folder
    with it in any file to upload (e.g. a `recipe.yaml` from an older deepdive) is refused before the commit.
    Local paths are not published: the commit message names the folder as the model card does, and the run's
    records (`recipe.yaml`, `eval.json`, ...) go up with their local paths shown the same way.
    """
    folder = check_model_folder(folder)
    check_push_settings(repo_id, "--repo_id", token)
    write_model_card(folder, repo_id)
    files = files_to_push(folder, report)
    secret = (token or get_token()).encode()
    for path in files.values():
        if path.suffix != ".safetensors" and secret in path.read_bytes():
            raise DataError(
                f"{path}: holds your Hugging Face token; remove it, then push again (nothing was uploaded)"
            )
    stage = read_record(folder, "metrics.json").get("stage", "model")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
    commit = api.create_commit(
        repo_id,
        operations=[
            CommitOperationAdd(
                path_in_repo=name, path_or_fileobj=published_record(name, path) if name in RECORDS else str(path)
            )
            for name, path in files.items()
        ],
        commit_message=f"deepdive: upload the {stage} stage from {shown_path(str(folder))}",
        repo_type="model",
    )
    (folder / "hub.json").write_text(
        json.dumps({"repo_id": repo_id, "commit_url": commit.commit_url}, indent=2) + "\n"
    )
    return commit.commit_url
