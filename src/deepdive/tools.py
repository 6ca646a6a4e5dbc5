"""The assistant's tools: `python`, a small safe calculator language, and `search`, BM25 over the train plays.

Arithmetic and letter counting go to code, "which play is X in" goes to a search whose result lands in the
context window. Each tool is a plain typed function with a Google-style docstring, so `get_json_schema` (and so
chat templates and TRL) can describe it, and it never raises on what the model sends: a bad call comes back as
one "error: ..." line. `python` runs no Python: it walks the `ast` of one expression and knows only whole
numbers, strings, + - * // % **, comparisons, len(s), s.count(t) and string indexing and slicing; every size is
checked before it is computed, so no input can hang or fill memory. `search` indexes passages of a few lines,
each opening with its speaker's name, so a query naming a character finds their own lines and their play, ahead
of lines that only mention the name; a passage must hold every name (capitalized word) of the query, so a name
the plays hold only half of ("Tom Sawyer": the plays have a Tom) finds nothing rather than the other half's
play. Each passage comes back as "In <title>, <passage>", the title after a space as the assistant's reply
writes it.
"""

import ast
import functools
import inspect
import json
import math
import re
import warnings

import bm25s
import numpy as np
from transformers.utils import get_json_schema

from deepdive.data import build_shakespeare


# --- python: a calculator language walked from the syntax tree -----------------------------------------------

MAX_CODE_CHARS = 500  # the model's context is 256 tokens: no honest call is longer
MAX_NODES = 200  # syntax-tree nodes, operators and contexts included
MAX_DEPTH = 40  # nesting of the syntax tree (a chain of 30 additions is 30 deep)
MAX_DIGITS = 100  # any whole number, given or computed
MAX_STRING_CHARS = 200  # any string, given or computed
NUMBER_LIMIT = 10**MAX_DIGITS


class Rejected(Exception):
    """Why the calculator refuses an input; `python` turns it into the "error: ..." line the model reads."""


def python(code: str) -> str:
    """Evaluate one expression of a small calculator language and return its value as text.

    The language has whole numbers, strings in quotes, + - * // % ** and parentheses, comparisons,
    len(s), s.count(t), and indexing or slicing of strings, e.g. 347 + 286, len('strawberry'),
    'strawberry'.count('r') or 'hello'[1:3]. A string result is shown in quotes. Anything else
    (names, variables, other functions, decimals, loops) gives a line starting with "error:".

    Args:
        code: One expression, such as 12 * (3 + 4) or 'banana'.count('a').
    """
    try:
        tree = parse_expression(code)
        return show_value(evaluate(tree.body))
    except Rejected as reason:
        return f"error: {reason}"
    except Exception as unexpected:  # a case the checks above missed: still an answer, never a crash
        return f"error: the expression could not be evaluated ({type(unexpected).__name__})"


def parse_expression(code: str) -> ast.Expression:
    """The syntax tree of `code`, after checking its length, its characters and the tree's size and depth."""
    if not isinstance(code, str):
        raise Rejected(f"the code must be a string, got {type(code).__name__}")
    code = code.strip()
    if not code:
        raise Rejected("the code is empty; write one expression, such as 2 + 3")
    if len(code) > MAX_CODE_CHARS:
        raise Rejected(f"the code is {len(code)} characters long; at most {MAX_CODE_CHARS} are allowed")
    if not all(character.isprintable() or character in "\n\t" for character in code):
        raise Rejected("the code contains a control character")
    try:
        with warnings.catch_warnings():  # e.g. "'int' object is not callable": the walk below refuses it anyway
            warnings.simplefilter("ignore")
            tree = ast.parse(code, mode="eval")
    except SyntaxError as error:
        raise Rejected(f"not a single expression ({error.msg})") from None
    check_tree_size(tree)
    return tree


def check_tree_size(tree: ast.AST) -> None:
    """Count the nodes and measure the depth without recursion, so a deep tree cannot exhaust the stack."""
    pending, count = [(tree, 1)], 0
    while pending:
        node, depth = pending.pop()
        count += 1
        if count > MAX_NODES:
            raise Rejected(f"the expression is too long; at most {MAX_NODES} parts are allowed")
        if depth > MAX_DEPTH:
            raise Rejected(f"the expression is nested too deeply; at most {MAX_DEPTH} levels are allowed")
        pending.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def evaluate(node: ast.AST) -> int | str:
    """The value of one node of an already size-checked tree; anything outside the language is rejected."""
    match node:
        case ast.Constant(value=bool() | None):
            raise Rejected(f"{node.value} is not supported; use whole numbers and strings")
        case ast.Constant(value=int() | str() as value):
            return checked(value)
        case ast.Constant(value=float() | complex()):
            raise Rejected("only whole numbers are supported (use // for whole-number division)")
        case ast.UnaryOp(op=ast.USub() | ast.UAdd() as op, operand=operand):
            value = evaluate(operand)
            if not isinstance(value, int):
                raise Rejected("- and + in front of a value need a number")
            return -value if isinstance(op, ast.USub) else +value
        case ast.UnaryOp(op=ast.Not()):
            raise Rejected("not is not supported; compare with == or != instead")
        case ast.UnaryOp(op=ast.Invert()):
            raise Rejected("the operator ~ is not supported")
        case ast.BinOp(left=left, op=op, right=right):
            return binary(op, evaluate(left), evaluate(right))
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            return compare(left, ops, comparators)
        case ast.Call():
            return call(node)
        case ast.Subscript(value=value, slice=index):
            return subscript(evaluate(value), index)
        case ast.Name(id=name):
            raise Rejected(f"unknown name {name!r}; there are no variables, write the values themselves")
        case ast.Attribute(attr=attribute):
            raise Rejected(f".{attribute} is not supported; the only method is s.count(t)")
    raise Rejected(f"{describe(node)} is not supported; use numbers, strings, + - * // % **, len() and .count()")


def describe(node: ast.AST) -> str:
    """A few words for a syntax the language lacks, so the model learns what to avoid."""
    names = {
        ast.Lambda: "lambda",
        ast.NamedExpr: "the := operator",
        ast.JoinedStr: "an f-string",
        ast.IfExp: "if/else",
        ast.BoolOp: "and/or",
        ast.List: "a list",
        ast.Tuple: "a tuple",
        ast.Dict: "a dict",
        ast.Set: "a set",
        ast.ListComp: "a comprehension",
        ast.SetComp: "a comprehension",
        ast.DictComp: "a comprehension",
        ast.GeneratorExp: "a generator",
        ast.Starred: "*",
        ast.Await: "await",
        ast.Yield: "yield",
        ast.YieldFrom: "yield",
        ast.Constant: "this kind of literal",
    }
    return names.get(type(node), type(node).__name__)


def checked(value: int | str) -> int | str:
    """`value`, if it is within the size limits."""
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        raise Rejected(f"a string would have {len(value)} characters; at most {MAX_STRING_CHARS} are allowed")
    if isinstance(value, int) and abs(value) >= NUMBER_LIMIT:
        raise Rejected(f"a number would have more than {MAX_DIGITS} digits")
    return value


def binary(op: ast.operator, left: int | str, right: int | str) -> int | str:
    """One arithmetic operation; each size is checked before the result is computed."""
    numbers = isinstance(left, int) and isinstance(right, int)
    match op:
        case ast.Add() if numbers or (isinstance(left, str) and isinstance(right, str)):
            return checked(left + right)  # each side is within the limits, so this is small
        case ast.Sub() if numbers:
            return checked(left - right)
        case ast.Mult() if numbers:
            return checked(left * right)
        case ast.Mult() if isinstance(left, str) != isinstance(right, str):
            text, times = (left, right) if isinstance(left, str) else (right, left)
            if len(text) * max(times, 0) > MAX_STRING_CHARS:  # checked before the string is made
                raise Rejected(f"a repeated string would have more than {MAX_STRING_CHARS} characters")
            return text * times
        case ast.FloorDiv() | ast.Mod() if numbers:
            if right == 0:
                raise Rejected("division by zero")
            return checked(left // right if isinstance(op, ast.FloorDiv) else left % right)
        case ast.Pow() if numbers:
            return power(left, right)
        case ast.Div():
            raise Rejected("/ is not supported; use // for whole-number division")
        case ast.Add() | ast.Sub() | ast.Mult() | ast.FloorDiv() | ast.Mod() | ast.Pow():
            raise Rejected(f"cannot apply {OPERATOR_SIGNS[type(op)]} to {kind(left)} and {kind(right)}")
    raise Rejected(f"the operator {OPERATOR_SIGNS.get(type(op), type(op).__name__)} is not supported")


OPERATOR_SIGNS = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.MatMult: "@",
}


def kind(value: int | str) -> str:
    return "a string" if isinstance(value, str) else "a number"


def power(base: int, exponent: int) -> int:
    """base ** exponent, refused when the result would be a fraction or longer than MAX_DIGITS digits."""
    if exponent < 0:
        raise Rejected("negative exponents are not supported (the result is not a whole number)")
    if abs(base) > 1 and exponent * math.log10(abs(base)) >= MAX_DIGITS:
        raise Rejected(f"a number would have more than {MAX_DIGITS} digits")
    return checked(base**exponent)  # base 0, 1 or -1 stays small whatever the exponent


COMPARISONS = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


def compare(left: ast.expr, ops: list[ast.cmpop], comparators: list[ast.expr]) -> bool:
    """A (possibly chained) comparison of two numbers or two strings; `in` asks whether a string holds another."""
    value = evaluate(left)
    for op, comparator in zip(ops, comparators, strict=True):
        other = evaluate(comparator)
        if type(op) not in COMPARISONS:
            raise Rejected("is / is not are not supported; use == or !=")
        if isinstance(op, ast.In | ast.NotIn) and not (isinstance(value, str) and isinstance(other, str)):
            raise Rejected("in needs two strings, as in 'r' in 'strawberry'")
        if isinstance(value, str) != isinstance(other, str):
            raise Rejected(f"cannot compare {kind(value)} with {kind(other)}")
        if not COMPARISONS[type(op)](value, other):
            return False
        value = other
    return True


def call(node: ast.Call) -> int:
    """len(s) or s.count(t), each with exactly one positional argument."""
    match node.func:
        case ast.Name(id="len"):
            name = "len(s)"
        case ast.Attribute(attr="count"):
            name = "s.count(t)"
        case _:
            raise Rejected("the only functions are len(s) and s.count(t)")
    if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
        raise Rejected(f"{name} takes exactly one argument")
    text = evaluate(node.func.value) if name == "s.count(t)" else ""
    if not isinstance(text, str):
        raise Rejected(f"count works on a string, not on {kind(text)}")
    argument = evaluate(node.args[0])
    if not isinstance(argument, str):
        raise Rejected(f"{name} needs a string argument, got {kind(argument)}")
    return len(argument) if name == "len(s)" else text.count(argument)


def subscript(value: int | str, index: ast.expr) -> str:
    """s[i] or s[start:stop:step] of a string, with whole-number positions."""
    if not isinstance(value, str):
        raise Rejected("only strings can be indexed or sliced")
    if isinstance(index, ast.Slice):
        bounds = [None if part is None else evaluate(part) for part in (index.lower, index.upper, index.step)]
        if any(bound is not None and not isinstance(bound, int) for bound in bounds):
            raise Rejected("slice positions must be whole numbers")
        if bounds[2] == 0:
            raise Rejected("a slice step cannot be zero")
        return value[bounds[0] : bounds[1] : bounds[2]]
    position = evaluate(index)
    if not isinstance(position, int):
        raise Rejected("a string index must be a whole number")
    if not -len(value) <= position < len(value):
        raise Rejected(f"index {position} is out of range for a string of {len(value)} characters")
    return value[position]


def show_value(value: int | str) -> str:
    """Numbers and True/False as Python prints them; strings in quotes, so '' and '7' differ from 7."""
    return repr(value) if isinstance(value, str) else str(value)


# --- search: BM25 over passages of the train plays -----------------------------------------------------------

SEARCH_RESULTS = 3  # passages returned
PASSAGE_LINES = 2  # lines of a speech per passage: about one short sentence of verse
PASSAGE_CHARS = 100  # a returned passage is cut to this many characters (the model's context is 256 tokens)
MAX_QUERY_CHARS = 200
# Besides the library's English function words, the words people use to ask about a play ("Which Shakespeare
# play features X?", taken from the train phrasings of the `shakespeare` task) say nothing about which play:
# they are left out, so "Which play is Quenthal in?" finds nothing rather than lines about playing.
QUESTION_WORDS = ["play", "plays", "shakespeare", "character", "characters", "appear", "appears", "called", "named",
                  "name", "features", "speak", "speaks", "tell", "know", "find", "show", "come", "remember", "trying",
                  "question", "quick", "hi", "hello", "hey"]  # fmt: skip
STOPWORDS = [*bm25s.stopwords.STOPWORDS_EN_PLUS, *QUESTION_WORDS]
SPEAKER_LINE = re.compile(r"^([A-Z][A-Za-z '.&-]{0,40}):$")  # "ROMEO:", "First Lord:"


def search(query: str) -> str:
    """Search Shakespeare's plays and return a few short passages, each with the title of its play.

    Naming a character finds that character's own lines, e.g. "Lady Macbeth" or "Which play is Romeo in?"; a
    passage has every name of the query or is not returned, so "Peter Pan" finds nothing.

    Args:
        query: Words to look for, such as a character's name or a phrase from a play.
    """
    try:
        words, names = query_words(query), name_words(query)
        retriever, passages, speakers = search_index()
        scores = retriever.get_scores(words + names)  # the names count twice: they outweigh the rest of a question
        found = scores > 0
        for name in names:  # a passage holds every name of the query: "Peter Pan" is not Peter's lines
            found &= retriever.get_scores([name]) > 0
        # the lines a named character speaks first, then the rest by their BM25 score
        best = sorted(np.flatnonzero(found), key=lambda i: (not set(names) <= speakers[i], -scores[i], i))
        if not best:
            return f"no passage of the plays has the words {', '.join(dict.fromkeys(words))}"
        return "\n".join(show_passage(*passages[i]) for i in best[:SEARCH_RESULTS])
    except Rejected as reason:
        return f"error: {reason}"


def query_words(query: str) -> list[str]:
    """The words of the query that can tell plays apart, after checking the query."""
    if not isinstance(query, str):
        raise Rejected(f"the query must be a string, got {type(query).__name__}")
    if len(query) > MAX_QUERY_CHARS:
        raise Rejected(f"the query is {len(query)} characters long; at most {MAX_QUERY_CHARS} are allowed")
    if not re.search(r"\w", query):
        raise Rejected("the query has no words; name a character or quote a line")
    words = passage_words([query], STOPWORDS)[0]
    if not words:
        raise Rejected("the query has only common words; name a character or quote a line")
    return words


def name_words(query: str) -> list[str]:
    """The names in `query`: its words that start with a capital letter, less the stopwords (which drop a question's
    own first word, "Which" or "Tell"), lower-cased as the index has them."""
    return passage_words([" ".join(re.findall(r"\b[A-Z][\w'-]*", query))], STOPWORDS)[0]


def passage_words(texts: list[str], stopwords: list[str]) -> list[list[str]]:
    """Lower-case words of two letters or more, stopwords left out (the index and the queries alike)."""
    return bm25s.tokenize(texts, stopwords=stopwords, return_ids=False, show_progress=False)


def show_passage(title: str, text: str) -> str:
    text = " ".join(text.split())
    return f"In {title}, {text if len(text) <= PASSAGE_CHARS else text[: PASSAGE_CHARS - 3] + '...'}"


@functools.cache
def search_index() -> tuple[bm25s.BM25, list[tuple[str, str]], list[set[str]]]:
    """The BM25 index over every passage of the train plays, the (title, text) of each passage and the words of
    its speaker's name (none for a stage direction).

    Built on first use (a few seconds) and kept for the life of the process.
    """
    passages = [
        passage for row in build_shakespeare()["train"] for passage in play_passages(row["title"], row["text"])
    ]
    retriever = bm25s.BM25()
    retriever.index(passage_words([text for _, text in passages], STOPWORDS), show_progress=False)
    labels = [text.split(":")[0] if not text.startswith("[") else "" for _, text in passages]
    speakers = [set(words) for words in passage_words(labels, STOPWORDS)]
    return retriever, passages, speakers


def play_passages(title: str, text: str) -> list[tuple[str, str]]:
    """(title, "SPEAKER: line line") for every PASSAGE_LINES lines of every speech; stage directions alone."""
    passages, speaker = [], None
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip().splitlines()
        if not lines:
            continue
        if len(lines) > 1 and (match := SPEAKER_LINE.match(lines[0])):
            speaker, lines = match.group(1), lines[1:]
        elif len(lines) == 1 and lines[0].startswith("["):
            passages.append((title, lines[0]))  # a stage direction names who enters and leaves
            continue
        elif lines[0].startswith(("ACT ", "SCENE ")) or (len(lines) == 1 and lines[0].isupper()):
            speaker = None  # the title, an act or a scene heading, a prologue
            continue
        if speaker is not None:  # a speech, or the rest of one after a stage direction
            for start in range(0, len(lines), PASSAGE_LINES):
                passages.append((title, f"{speaker}: {' '.join(lines[start : start + PASSAGE_LINES])}"))
    return passages


# --- dispatching a parsed tool call --------------------------------------------------------------------------

TOOLS = [python, search]
TOOLS_BY_NAME = {tool.__name__: tool for tool in TOOLS}
TOOL_SCHEMAS = json.dumps([get_json_schema(tool) for tool in TOOLS])  # as a dataset's `tools` column holds them


def failed(result: str) -> bool:
    """Whether a tool's reply is the "error: ..." line it gives instead of raising."""
    return result.startswith("error:")


def run_tool_call(name: str, arguments: dict) -> str:
    """Run the tool `name` on `arguments` (its parameters by name) and return its text; never raises.

    An unknown tool, a missing, extra or mistyped argument, or a tool that fails comes back as an
    "error: ..." line for the model, like a refused expression.
    """
    tool = TOOLS_BY_NAME.get(name) if isinstance(name, str) else None
    if tool is None:
        return f"error: unknown tool {str(name)[:40]!r}; the tools are {', '.join(TOOLS_BY_NAME)}"
    if not isinstance(arguments, dict):
        return f"error: the arguments of {name} must be an object of named values"
    parameters = inspect.signature(tool).parameters
    missing = [parameter for parameter in parameters if parameter not in arguments]
    extra = [str(argument) for argument in arguments if argument not in parameters]
    if missing or extra:
        return f"error: {name} takes {', '.join(parameters)}" + (
            f"; missing {', '.join(missing)}" if missing else f"; unknown {', '.join(extra)}"
        )
    for parameter, value in arguments.items():
        if not isinstance(value, parameters[parameter].annotation):
            return f"error: {parameter} must be a {parameters[parameter].annotation.__name__}"
    try:
        return tool(**arguments)
    except Exception as failure:
        return f"error: {name} failed ({type(failure).__name__})"
