"""The tools: the calculator's sandbox table, the search over the plays, and dispatching a parsed tool call.

Every hostile input must come back as an "error: ..." string, with nothing written to disk. Hangs and huge
allocations are ruled out by the guards themselves (sizes are checked before anything is computed), so the
table has no timing asserts: a guard that failed would show as a suite that never finishes or runs out of memory.
"""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.utils import get_json_schema

from deepdive import tools
from deepdive.tasks.shakespeare import DONT_KNOW, ShakespeareQA, corpus_characters
from deepdive.tools import (
    MAX_CODE_CHARS,
    MAX_DIGITS,
    MAX_QUERY_CHARS,
    MAX_STRING_CHARS,
    PASSAGE_CHARS,
    SEARCH_RESULTS,
    python,
    run_tool_call,
    search,
)


HOSTILE_CODE = {
    "import call": "__import__('os')",
    "import statement": "import os",
    "import then call": "__import__('os').system('touch pwned')",
    "dunder walk": "().__class__.__bases__",
    "dunder on a string": "''.__class__.__mro__[1].__subclasses__()",
    "dunder through count": "'a'.count.__self__",
    "open for writing": "open('pwned', 'w')",
    "open through builtins": "__builtins__['open']('pwned', 'w')",
    "eval": "eval('1 + 1')",
    "exec": "exec('x = 1')",
    "compile": "compile('1', 'f', 'eval')",
    "getattr": "getattr('', 'count')",
    "attribute other than count": "'abc'.upper()",
    "count not called": "'abc'.count",
    "len of a name": "len(x)",
    "a name": "x",
    "a builtin name": "print",
    "huge tower of powers": "9**9**9",
    "huge exponent": "10**100000",
    "huge repeat": "'a'*10**10",
    "huge repeat, number first": "10**10*'a'",
    "repeat of a repeat": "'a'*150*150",
    "huge product": "(10**60)*(10**60)",
    "huge literal": "1" * (MAX_DIGITS + 1),
    "negative exponent": "2**-1",
    "shift": "1 << 100000",
    "division by zero": "7 // 0",
    "modulo zero": "7 % 0",
    "true division": "7 / 2",
    "float": "1.5 * 2",
    "float exponent": "1e308 * 10",
    "complex": "1j",
    "string formatting": "'%999999999d' % 1",
    "bytes": "b'abc'",
    "f-string": "f'{1 + 1}'",
    "lambda": "(lambda: 1)()",
    "list comprehension": "[x for x in 'abc']",
    "generator": "len(x for x in 'abc')",
    "walrus": "(x := 1)",
    "while loop": "while True: pass",
    "for loop": "for i in range(10**10): pass",
    "two statements": "1; 2",
    "assignment": "x = 1",
    "conditional expression": "1 if 1 else 2",
    "boolean operator": "1 and 2",
    "list": "[1, 2, 3]",
    "tuple": "(1, 2)",
    "dict": "{'a': 1}",
    "starred argument": "len(*'ab')",
    "keyword argument": "len(s='ab')",
    "count with bounds": "'abc'.count('a', 0, 2)",
    "len of a number": "len(123)",
    "index a number": "(123)[0]",
    "slice step zero": "'abc'[::0]",
    "index out of range": "'abc'[10]",
    "string index": "'abc'['a']",
    "compare number and string": "1 < 'a'",
    "identity": "1 is 1",
    "nested parentheses, 1000 deep": "(" * 1000 + "1" + ")" * 1000,
    "unary minus, 10000 deep": "-" * 10000 + "1",
    "unary minus, deep but short": "-" * 300 + "1",
    "long chain of additions": "+".join(["1"] * 240),
    "very long input": "1+" * 100_000 + "1",
    "empty": "",
    "blank": "   \n\t ",
    "fullwidth digits": "\uff11\uff12\uff13 + 1",
    "fullwidth name": "\uff45val('1')",
    "lookalike import": "__\uff49mport__('os')",
    "null byte": "1\u0000 + 1",
    "bidi override": "1 + \u202e1",
    "lone surrogate": "'\ud800'",
    "ellipsis": "...",
    "None": "None",
    "True": "True",
}


@pytest.mark.parametrize("code", HOSTILE_CODE.values(), ids=HOSTILE_CODE.keys())
def test_hostile_code_gets_an_error_string_and_touches_nothing(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = python(code)
    assert isinstance(result, str) and result.startswith("error: ")
    assert "\n" not in result and len(result) < 200
    assert list(tmp_path.iterdir()) == []


def test_open_creates_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert python("open('x', 'w')").startswith("error: ")
    assert python(f"open({str(tmp_path / 'y')!r}, 'w')").startswith("error: ")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize(
    "code, expected",
    [
        ("123+456", "579"),
        ("3*(4-5)", "-3"),
        ("len('strawberry')", "10"),
        ("'strawberry'.count('r')", "3"),
        ("'hello'[1:3]", "'el'"),
        ("'hello'[-1]", "'o'"),
        ("'hello'[::-1]", "'olleh'"),
        ("'hello'[10:]", "''"),
        ("len('hello'[1:3])", "2"),
        ("'strawberry'[2:].count('r')", "3"),
        ("7//2", "3"),
        ("-7//2", "-4"),
        ("7 % 3", "1"),
        ("-3", "-3"),
        ("2**10", "1024"),
        ("(-1)**(10**99)", "1"),
        ("347 - 286 + 1", "62"),
        ("1 < 2 < 3", "True"),
        ("'r' in 'strawberry'", "True"),
        ("'ab' + 'cd'", "'abcd'"),
        ("'ab' * 3", "'ababab'"),
        ("'café'.count('é')", "1"),
        ("  12 * (3 + 4)\n", "84"),
        ("10**99", "1" + "0" * 99),
    ],
)
def test_the_language_computes(code, expected):
    assert python(code) == expected


def test_limits_sit_exactly_at_their_bounds():
    assert python(f"10**{MAX_DIGITS - 1}") == "1" + "0" * (MAX_DIGITS - 1)
    assert python(f"10**{MAX_DIGITS}").startswith("error: ")
    assert python(f"'a'*{MAX_STRING_CHARS}") == repr("a" * MAX_STRING_CHARS)
    assert python(f"'a'*{MAX_STRING_CHARS + 1}").startswith("error: ")
    assert python("1+" + " " * (MAX_CODE_CHARS - 3) + "1") == "2"
    assert python("1+" + " " * (MAX_CODE_CHARS - 2) + "1").startswith("error: ")


def test_errors_tell_the_model_what_to_do_instead():
    assert "//" in python("7 / 2")
    assert "division by zero" in python("1 // 0")
    assert "len(s) and s.count(t)" in python("print(1)")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_gives_a_string_and_never_raises(code):
    assert isinstance(python(code), str)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789+-*/%()'abc[]:.,<=> ", max_size=40))
def test_calculator_like_text_gives_a_string_and_never_raises(code):
    assert isinstance(python(code), str)


@pytest.mark.parametrize("tool, parameter", [(python, "code"), (search, "query")])
def test_transformers_reads_each_tool_schema(tool, parameter):
    schema = get_json_schema(tool)
    function = schema["function"]
    assert schema["type"] == "function" and function["name"] == tool.__name__
    assert function["description"]
    assert function["parameters"]["properties"][parameter]["type"] == "string"
    assert function["parameters"]["properties"][parameter]["description"]
    assert function["parameters"]["required"] == [parameter]
    assert [get_json_schema(tool)["function"]["name"] for tool in tools.TOOLS] == ["python", "search"]


# --- search --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "   ", "?!...,;", "the and of", "x" * (MAX_QUERY_CHARS + 1), None, 42])
def test_search_refuses_empty_common_or_huge_queries(query):
    result = search(query)
    assert isinstance(result, str) and result.startswith("error: ")


@pytest.mark.parametrize(
    "query, title",
    [
        ("ROMEO", "Romeo and Juliet"),
        ("Which play is Lady Macbeth in?", "Macbeth"),
        ("Shylock", "The Merchant of Venice"),
        ("In which play does the character Falstaff appear?", "Henry IV, Part I"),
        ("what play is benvolio from", "Romeo and Juliet"),
        ("Do you know which play Rosalind is in?", "As You Like It"),
    ],
)
def test_naming_a_character_finds_their_play(query, title):
    first = search(query).splitlines()[0]
    assert first.startswith(f"In {title}, ")


def title_and_passage(line: str) -> tuple[str, str]:
    """A result line "In <title>, <passage>" cut in two (a title may hold a comma: "Henry VI, Part 1")."""
    (title,) = [title for title in corpus_characters().titles if line.startswith(f"In {title}, ")]
    return title, line.removeprefix(f"In {title}, ")


def test_results_are_few_and_short():
    lines = search("Which play is Romeo in?").splitlines()
    assert len(lines) == SEARCH_RESULTS
    for line in lines:
        title, passage = title_and_passage(line)
        assert title == "Romeo and Juliet" and 0 < len(passage) <= PASSAGE_CHARS


def test_a_name_not_in_the_plays_finds_nothing():
    assert search("Which play is Quenthal in?").startswith("no passage of the plays")
    assert search("Hamlet").startswith("no passage")  # Hamlet is a validation play: not indexed


def test_a_name_the_plays_hold_only_half_of_finds_nothing():
    assert search("Peter").startswith("In ")  # the plays have a Peter, a Tom, a Mary
    for query in ["Peter Pan", "Which play is Tom Sawyer in?", " Mary Poppins"]:
        assert search(query).startswith("no passage of the plays has the words ")


def test_a_characters_own_lines_come_before_lines_that_mention_them():
    # Gower says "Alexander the Great" in Henry V; the character Alexander speaks in Troilus and Cressida
    for line in search(" Alexander").splitlines():
        title, passage = title_and_passage(line)
        assert title == "Troilus and Cressida" and passage.startswith("ALEXANDER: ")


def test_search_names_the_play_of_the_held_out_shakespeare_questions():
    """The search half of the lesson, asked as a person asks: the right play comes first for the task's held-out
    known characters in every test phrasing."""
    known = corpus_characters().known
    questions = [
        (phrasing.format(name=name), known[name]) for name, phrasing in ShakespeareQA().questions("test")["known"]
    ]
    assert len(questions) > 100
    first_titles = [title_and_passage(search(question).splitlines()[0])[0] for question, _ in questions]
    hits = sum(title == answer for title, (_, answer) in zip(first_titles, questions, strict=True))
    assert hits / len(questions) >= 0.95


def test_search_answers_the_held_out_shakespeare_calls():
    """The search half of the lesson, as the task's calls ask it: every passage names the right play for a held-out
    known character, and a name from outside the plays (famous or invented) finds nothing."""
    known_found = []
    for example in ShakespeareQA().examples("test", 400):
        query = json.loads(example["tool_call"])["arguments"]["query"]
        result = search(query)
        if example["answer"] == DONT_KNOW:
            assert result.startswith("no passage of the plays"), (query, result)
        else:
            known_found.append(({title_and_passage(line)[0] for line in result.splitlines()}, example["answer"]))
    assert len(known_found) > 100
    assert all(titles == {answer} for titles, answer in known_found)


def test_passages_carry_their_speaker_and_skip_headings():
    text = "A PLAY\n\nACT I\n\nSCENE I. A street.\n\n[Enter ROMEO]\n\nROMEO:\nOne\nTwo\nThree\n\n[Aside]\n\nFour\n"
    assert tools.play_passages("A Play", text) == [
        ("A Play", "[Enter ROMEO]"),
        ("A Play", "ROMEO: One Two"),
        ("A Play", "ROMEO: Three"),
        ("A Play", "[Aside]"),
        ("A Play", "ROMEO: Four"),
    ]


# --- run_tool_call -------------------------------------------------------------------------------------------


def test_run_tool_call_dispatches_to_the_tools():
    assert run_tool_call("python", {"code": "123+456"}) == "579"
    assert run_tool_call("search", {"query": "ROMEO"}).startswith("In Romeo and Juliet, ")


@pytest.mark.parametrize(
    "name, arguments",
    [
        ("calculator", {"code": "1+1"}),
        ("", {}),
        (None, {"code": "1+1"}),
        (["python"], {"code": "1+1"}),
        ("python", {}),
        ("python", {"expression": "1+1"}),
        ("python", {"code": "1+1", "extra": 1}),
        ("python", {"code": 5}),
        ("python", {"code": None}),
        ("search", {"query": ["ROMEO"]}),
        ("python", None),
        ("python", '{"code": "1+1"}'),
        ("python", ["1+1"]),
    ],
)
def test_run_tool_call_answers_a_bad_call_with_an_error(name, arguments):
    result = run_tool_call(name, arguments)
    assert isinstance(result, str) and result.startswith("error: ")


def test_run_tool_call_turns_a_failing_tool_into_an_error(monkeypatch):
    def broken(code: str) -> str:
        raise RuntimeError("the index is gone")

    monkeypatch.setitem(tools.TOOLS_BY_NAME, "python", broken)
    assert run_tool_call("python", {"code": "1"}) == "error: python failed (RuntimeError)"
