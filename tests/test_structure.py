"""How the package is put together: imports show the architecture, and a built install carries what it reads.

The rules are read from the source with `ast`, nothing imported: no deepdive module imports another inside a
function (a boundary that needs it is drawn wrong), the module-level imports form no cycle, the bottom layer
imports nothing above it, and one module makes a model write. Then the package is built and installed the way a
user installs it (`pip install .`, not editable) and the installed copy, alone on the path, must find every data
card.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from deepdive.data import DATA_CARDS_DIR


PACKAGE = REPO / "src" / "deepdive"
# The one module allowed to import deepdive modules inside functions: each `deepdive` command imports what it runs
# when it runs, so `deepdive --help` answers in hundredths of a second instead of seconds (see cli.py's docstring).
LAZY_BY_DESIGN = {"deepdive.cli"}
BOTTOM_LAYER = {"deepdive.errors", "deepdive.records"}  # import no other deepdive module


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def deepdive_imports(source: str, module: str, modules: set[str]) -> list[tuple[str, bool]]:
    """(deepdive module imported, whether the import sits inside a function) for each import in `source`."""
    is_package = any(other.startswith(f"{module}.") for other in modules)
    package = module if is_package else module.rpartition(".")[0]
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend((alias.name, inside) for alias in child.names if alias.name.split(".")[0] == "deepdive")
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # a relative import, resolved against this module's package
                    parts = package.split(".")
                    anchor = parts[: len(parts) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.split(".")[0] == "deepdive":
                    for alias in child.names:  # `from deepdive import hub` imports the module deepdive.hub
                        target = f"{base}.{alias.name}"
                        found.append((target if target in modules else base, inside))
            visit(child, inside)

    visit(ast.parse(source), False)
    return found


def package_modules() -> dict[str, str]:
    """{module name: source} of every Python file of src/deepdive (the `evaluate` metric scripts included)."""
    return {module_name(path): path.read_text(encoding="utf-8") for path in sorted(PACKAGE.rglob("*.py"))}


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """{module: the deepdive modules it imports at module level}."""
    return {
        module: {target for target, inside in deepdive_imports(source, module, set(sources)) if not inside}
        for module, source in sources.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path that returns to its start, or None."""
    done, path = set(), []

    def walk(module):
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph.get(module, ())):
            cycle = walk(target)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = walk(module)
        if cycle:
            return cycle
    return None


def test_no_deepdive_module_imports_another_inside_a_function():
    modules = package_modules()
    lazy = [
        f"{module} imports {target}"
        for module, source in modules.items()
        if module not in LAZY_BY_DESIGN
        for target, inside in deepdive_imports(source, module, set(modules))
        if inside
    ]
    assert lazy == []


def test_module_level_imports_form_no_cycle():
    graph = import_graph(package_modules())
    assert len(graph) > 20 and sum(map(len, graph.values())) > 30  # the whole package was read
    assert find_cycle(graph) is None


def test_the_bottom_layer_imports_nothing_above_it():
    graph = import_graph(package_modules())
    assert {module: graph[module] - {"deepdive.errors"} for module in BOTTOM_LAYER} == dict.fromkeys(
        BOTTOM_LAYER, set()
    )


def generate_callers(sources: dict[str, str]) -> list[str]:
    """The modules that call a `.generate(...)` method (a model writing text)."""
    return sorted(
        module
        for module, source in sources.items()
        if any(
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "generate"
            for node in ast.walk(ast.parse(source))
        )
    )


def test_one_module_makes_a_model_write():
    """Samples, chat, evaluation and the report all generate through `deepdive.generation`."""
    assert generate_callers(package_modules()) == ["deepdive.generation"]
    assert generate_callers({"deepdive.x": "def f(model):\n    return model.generate(x)\n"}) == ["deepdive.x"]


def test_the_checks_catch_what_they_forbid():
    modules = {"deepdive", "deepdive.a", "deepdive.b", "deepdive.c"}
    source = "import os\nfrom deepdive import a\n\ndef f():\n    from deepdive.b import thing\n    return thing\n"
    assert deepdive_imports(source, "deepdive.c", modules) == [("deepdive.a", False), ("deepdive.b", True)]
    assert find_cycle({"deepdive.a": {"deepdive.b"}, "deepdive.b": {"deepdive.c"}, "deepdive.c": {"deepdive.a"}}) == [
        "deepdive.a", "deepdive.b", "deepdive.c", "deepdive.a",
    ]  # fmt: skip
    assert find_cycle({"deepdive.a": {"deepdive.b"}, "deepdive.b": set(), "deepdive.c": {"deepdive.b"}}) is None


FIND_CARDS = """
import json, sys
from pathlib import Path
import deepdive.data as data
cards = sorted(path.stem for path in data.DATA_CARDS_DIR.glob("*.md"))
print(json.dumps({
    "package": str(Path(data.__file__).resolve().parent),
    "cards_dir": str(data.DATA_CARDS_DIR.resolve()),
    "cards": {name: sorted(data.read_data_card(name)) for name in cards},
}))
"""


def test_an_installed_package_finds_every_data_card(tmp_path):
    source, target = tmp_path / "source", tmp_path / "installed"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "src", source / "src", symlinks=True, ignore=skip)  # the package's data_cards link as is
    shutil.copytree(REPO / "data_cards", source / "data_cards")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    shutil.rmtree(source)  # nothing may be read from the source tree, or the repository's data_cards/
    result = subprocess.run(
        [sys.executable, "-c", FIND_CARDS],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout)
    assert found["package"] == str((target / "deepdive").resolve())
    assert (
        Path(found["cards_dir"]).is_relative_to(target.resolve()) and not (target / "deepdive/data_cards").is_symlink()
    )
    assert sorted(found["cards"]) == sorted(path.stem for path in (REPO / "data_cards").glob("*.md"))
    assert all("license" in fields for fields in found["cards"].values())  # each card's front matter was read
    metrics = sorted(path.parent.name for path in (target / "deepdive" / "metrics").glob("*/*.py"))
    assert metrics == ["bits_per_byte", "pass_at_k", "task_accuracy"]


@pytest.mark.parametrize("card", sorted(path.stem for path in (REPO / "data_cards").glob("*.md")))
def test_the_package_reaches_the_repository_cards(card):
    assert (DATA_CARDS_DIR / f"{card}.md").read_bytes() == (REPO / "data_cards" / f"{card}.md").read_bytes()
