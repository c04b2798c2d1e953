"""The package's layout: each package imports only the packages before it in the pipeline, and
the command line's ``--help`` imports none of the heavy libraries.

Every ``import`` of ``codebook_features.*`` counts, at module level or inside a function (a
function-level import is still a dependency at run time), and so do the modules a package's
``__init__`` exports lazily (``lazy_exports``); imports under ``if TYPE_CHECKING:`` do not.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import codebook_features

ROOT = Path(codebook_features.__file__).parent
PACKAGE = "codebook_features"
ORDER = (
    "settings",
    "persist",
    "codebook",
    "attach",
    "training",
    "store",
    "search",
    "steering",
    "app",
    "demos",
)
"""The packages, lowest first: each may import only those before it (and itself)."""
SHARED = ("errors", "_version", "_lazy")
"""Top-level modules every module may import; they import only each other."""
ENTRY = ("__init__", "cli", "__main__")
"""Top-level modules above every package, in this order: the package itself (its lazy
exports), the ``codebook`` command (which no package imports), ``python -m``."""
HEAVY = ("torch", "transformers", "numpy", "pyarrow", "duckdb", "fastapi")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """Whether ``name`` (``codebook_features.x.y``) is a module or package of ours."""
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(path: Path, this: str | None = None) -> list[tuple[int, str]]:
    """``(line, module)`` for each import of one of our modules in the file ``path`` (the
    module ``this``, by default the one at ``path``)."""
    this = module_name(path) if this is None else this
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                inner = f"{base}.{alias.name}"
                found.append((node.lineno, inner if is_module(inner) else base))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "lazy_exports"
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Dict)
        ):
            found.extend(
                (node.lineno, key.value)
                for key in node.args[1].keys
                if isinstance(key, ast.Constant) and isinstance(key.value, str)
            )
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return [
        (line, name) for line, name in found if name == PACKAGE or name.startswith(f"{PACKAGE}.")
    ]


def layer(module: str) -> tuple[int, str]:
    """Where ``module`` sits: ``(rank, group)``; a module may import lower ranks, and its own
    group."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top in SHARED:
        return -1, "shared"
    if top in ORDER:
        return ORDER.index(top), top
    if top in ENTRY:
        return len(ORDER) + ENTRY.index(top), top
    raise AssertionError(f"{module} is in no layer: add its package to ORDER in {__file__}")


def allowed(importer: str, imported: str) -> bool:
    (rank, group), (other_rank, other_group) = layer(importer), layer(imported)
    return other_rank < rank or other_group == group


def test_every_package_is_in_the_order() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    modules = {p.stem for p in ROOT.glob("*.py")}
    assert packages == set(ORDER), "add new packages to ORDER (and the README's map)"
    assert modules == set(SHARED) | set(ENTRY)


def test_packages_import_only_the_packages_before_them() -> None:
    violations: dict[str, None] = {}  # in order, each once
    for path in sorted(ROOT.rglob("*.py")):
        this = module_name(path)
        for line, imported in imported_modules(path):
            if not allowed(this, imported):
                violations[f"{this} -> {imported}  ({path.relative_to(ROOT)}:{line})"] = None
    order = " -> ".join(ORDER)
    assert not violations, f"imports against the order {order}:\n" + "\n".join(violations)


def test_the_checks_see_what_they_should(tmp_path) -> None:
    """The scan finds module-level, function-level, relative and lazy imports, and skips
    those under TYPE_CHECKING."""
    source = tmp_path / "example.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import codebook_features.errors\n"
        "from codebook_features.persist import files\n"
        "from codebook_features.settings.base import Settings\n"
        "from . import shards\n"
        "from ..attach.model import CodebookModel\n"
        "if TYPE_CHECKING:\n"
        "    from codebook_features.app.config import ServeConfig\n"
        "def load():\n"
        "    from codebook_features.search.regex import regex_codes\n"
        "lazy_exports(__name__, {'codebook_features.steering.concept': ['Concept']})\n"
    )
    found = [name for _, name in imported_modules(source, f"{PACKAGE}.store.example")]
    assert found == [
        f"{PACKAGE}.errors",
        f"{PACKAGE}.persist.files",
        f"{PACKAGE}.settings.base",
        f"{PACKAGE}.store.shards",
        f"{PACKAGE}.attach.model",
        f"{PACKAGE}.search.regex",
        f"{PACKAGE}.steering.concept",
    ]
    assert not allowed(f"{PACKAGE}.persist.files", f"{PACKAGE}.store.schema")
    assert not allowed(f"{PACKAGE}.app.cli", f"{PACKAGE}.cli")
    assert allowed(f"{PACKAGE}.settings.base", f"{PACKAGE}.errors")
    assert allowed(f"{PACKAGE}.__main__", f"{PACKAGE}.cli")


def test_search_help_imports_none_of_the_heavy_libraries() -> None:
    command = [sys.executable, "-X", "importtime", "-m", PACKAGE, "search", "regex", "--help"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    # the command's own module comes through importlib.import_module, which -X importtime does
    # not time; what it imports with import statements is timed
    assert f"{PACKAGE}.search.config" in imported, "the report is not what it should be"
    heavy = sorted(name for name in imported if name.split(".")[0] in HEAVY)
    assert not heavy, f"`codebook search regex --help` imports {', '.join(heavy)}"


RUN_AND_LIST_HEAVY = """
import sys
from codebook_features.cli import main
code = main(sys.argv[1:])
names = ("torch", "transformers", "fastapi", "uvicorn", "accelerate")
heavy = [m for m in names if m in sys.modules]
print(code, " ".join(heavy))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "regex", "--store", "{store}", "--pattern", "dragon"],
        ["search", "token", "--store", "{store}", "--token", "the"],
        ["search", "topics", "--store", "{store}"],
        ["search", "code", "--store", "{store}", "--code", "layers.0.mlp/0/3"],
        ["concept", "list", "{concepts}"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_commands_that_run_no_model_import_no_model_library(argv, tmp_path) -> None:
    """Searching a store and listing concepts read files: they start (and run) without
    importing torch, transformers or the web stack."""
    from tests.store.synthetic import write_store

    store = write_store(tmp_path / "store")
    (tmp_path / "concepts").mkdir()
    argv = [a.format(store=store, concepts=tmp_path / "concepts") for a in argv]
    command = [sys.executable, "-c", RUN_AND_LIST_HEAVY, *argv]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    code, *heavy = done.stdout.strip().splitlines()[-1].split(" ")
    assert code == "0", done.stderr[-2000:]
    assert [h for h in heavy if h] == []
