"""The house's layout: scripts import library modules, never each other; no module imports in a
circle; world/'s chapters import only the chapters before them; imports sit at the top."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = {"train", "sample", "eval", "bench", "lmblock"}
WORLD_CHAPTERS = ["drawing", "scenes", "fewshot", "text", "episodes", "__main__"]


def module_files():
    files = {p.stem: p for p in REPO.glob("*.py")}
    files.update({f"world.{p.stem}": p for p in (REPO / "world").glob("*.py")})
    return files


def imports_of(path, inner_only=False):
    """Project modules a file imports (at the top, or inside functions/classes with inner_only)."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if not inner_only else (
        n for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        for n in ast.walk(f))
    names = module_files()
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ("world." if node.level and path.parent.name == "world" else "") + (node.module or "")
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {n for n in found if n in names or n == "world"}


def test_scripts_import_no_other_script():
    for name in SCRIPTS:
        others = imports_of(module_files()[name]) & (SCRIPTS - {name})
        allowed = {"train"} if name == "bench" else set()  # bench times train.py's own steps
        assert others <= allowed, (name, others)


def test_no_import_circle():
    files = module_files()
    graph = {name: {n for n in imports_of(path) if n != name} for name, path in files.items()}
    graph["world"] = {f"world.{c}" for c in WORLD_CHAPTERS if c != "__main__"}

    def visit(node, path):
        assert node not in path, " -> ".join(path + [node])
        for nxt in graph.get(node, ()):
            visit(nxt, path + [node])

    for name in graph:
        visit(name, [])


def test_world_chapters_import_only_earlier_chapters():
    for i, chapter in enumerate(WORLD_CHAPTERS):
        used = {n.removeprefix("world.") for n in imports_of(REPO / "world" / f"{chapter}.py") if n.startswith("world.")}
        assert used <= set(WORLD_CHAPTERS[:i]), (chapter, used - set(WORLD_CHAPTERS[:i]))


def test_library_imports_are_at_the_top():
    for name, path in module_files().items():
        assert not imports_of(path, inner_only=True), (name, imports_of(path, inner_only=True))


def test_every_relative_link_in_the_docs_names_a_file_that_exists():
    """README and the results files link to one another: a link to a moved or deleted file fails."""
    broken = []
    for doc in [REPO / "README.md", *(REPO / "docs").rglob("*.md")]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            path = target.split("#")[0]
            if path and "://" not in path and not (doc.parent / path).exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert not broken, broken
