"""Layout checks (STYLE.md rule 10): no import cycles between the project's modules, and small modules.

Imports are read with ``ast``; nothing is imported. In ``models/`` every import counts, the
function-level ones too: a lazy import still makes two modules depend on each other. In
``pipeline/``, ``runners/`` and ``schemas/`` only module-level imports count: a function-level
import there is the deliberate way to keep heavy dependencies (TensorFlow, the models) off import
time (rule 3). The graph spans all four packages, so a cycle through another package counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("models", "pipeline", "runners", "schemas")
ALL_IMPORTS = ("models",)  # packages whose function-level imports count as well
FOLDER_ORDER = ("pipeline", "models", "runners")  # each imports only the folders before it (schemas: both ways)
MAX_LINES = 300
# Modules still over MAX_LINES. Remove an entry when its module is split; add none.
OVERSIZED: set[str] = set()


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of PACKAGES under ``root``."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _import_nodes(tree: ast.Module, *, nested: bool):
    """Import statements run at import time (also inside if/try/class), or all when ``nested``."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif nested or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def _names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement reaches (``from a import b``: ``a.b``, a module or not)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = ""
    if node.level:  # relative: the importing package, then one level up per extra dot
        base = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
    prefix = ".".join(part for part in (base, node.module or "") if part)
    return [f"{prefix}.{alias.name}" for alias in node.names]


def import_graph(root: Path, *, every_import: bool = False) -> dict[str, set[str]]:
    """Module -> the project modules it imports (the deepest module each imported name lies in);
    function-level imports count in ALL_IMPORTS, or everywhere with ``every_import``."""
    known = modules(root)
    graph = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        nested = every_import or module.split(".")[0] in ALL_IMPORTS
        targets = set()
        for node in _import_nodes(tree, nested=nested):
            for name in _names(node, module, path.name == "__init__.py"):
                parts = name.split(".")
                target = next((".".join(parts[:n]) for n in range(len(parts), 0, -1)
                               if ".".join(parts[:n]) in known), None)
                if target and target != module:
                    targets.add(target)
        graph[module] = targets
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), list(graph[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or round a longer circle."""
    reach = {module: _reachable(graph, module) for module in graph}
    groups = {frozenset(n for n in reach[m] if m in reach[n]) for m in graph if m in reach[m]}
    return sorted(sorted(group) for group in groups)


def test_no_import_cycles():
    graph = import_graph(ROOT)
    assert {"models.cli", "models.train", "models.report", "pipeline.options"} <= set(graph)
    assert "models.train" in graph["models.cli"]  # edges are found (a vacuous graph has no cycles)
    assert cycles(graph) == []


def test_cycle_check_counts_function_level_imports_in_models_only(tmp_path):
    files = {
        "models/__init__.py": "",
        "models/a.py": "from models.b import B\n",
        "models/b.py": "def late():\n    from models import a\n",
        "pipeline/__init__.py": "",
        "pipeline/c.py": "from . import d\n",
        "pipeline/d.py": "def late():\n    from pipeline.c import C\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["models.b"] == {"models.a"} and graph["pipeline.c"] == {"pipeline.d"}
    assert graph["pipeline.d"] == set()  # lazy: the way pipeline keeps heavy imports off import time
    assert cycles(graph) == [["models.a", "models.b"]]


def wrong_way(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports against FOLDER_ORDER: a folder importing one that comes after it."""
    rank = {folder: n for n, folder in enumerate(FOLDER_ORDER)}
    folder = lambda module: module.split(".")[0]  # noqa: E731
    return sorted((module, target) for module, targets in graph.items() for target in targets
                  if folder(module) in rank and folder(target) in rank and rank[folder(module)] < rank[folder(target)])


def test_folders_depend_one_way():
    """pipeline/ serves exported models and never trains one: it imports nothing of models/ (the
    shipped exports are files to it, pipeline/model_profiles.py); models/ trains from catalogs read
    through pipeline/; runners/ (the command line, nightly, Dataflow) sits above both. Every
    import counts, function-level ones too."""
    graph = import_graph(ROOT, every_import=True)
    assert "pipeline.options" in graph["models.cli"] and "models.cli" in graph["runners.cli"]
    assert wrong_way(graph) == []


def test_folder_rule_finds_a_lazy_import_the_wrong_way(tmp_path):
    files = {"models/__init__.py": "", "models/a.py": "from pipeline.b import B\n",
             "pipeline/__init__.py": "", "pipeline/b.py": "def late():\n    from models.a import A\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert wrong_way(import_graph(tmp_path)) == []  # function-level in pipeline: unseen by the cycle check
    assert wrong_way(import_graph(tmp_path, every_import=True)) == [("pipeline.b", "models.a")]


def test_modules_stay_small():
    lines = {str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
             for path in modules(ROOT).values()}
    over = {path: n for path, n in lines.items() if n > MAX_LINES}
    assert set(over) <= OVERSIZED, f"over {MAX_LINES} lines: {over}; split them along a real seam"
    fixed = sorted(path for path in OVERSIZED if lines.get(path, 0) <= MAX_LINES)
    assert not fixed, f"{fixed} no longer over {MAX_LINES} lines: remove them from OVERSIZED"


STAGES = ("ReadDump", "MapTaxonomy", "DeduplicateImages", "MatchPrevious", "LoadImages", "ScoreImages",
          "AggregateProducts", "NearDuplicateEdges", "GroupsFromEdges", "AttachGroups", "WriteTable", "CommitRun")


def _calls(tree: ast.Module) -> set[str]:
    return {node.func.id if isinstance(node.func, ast.Name) else node.func.attr for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))}


def test_the_stages_are_chained_in_one_place():
    """One pipeline and every pass of a sharded run are built by pipeline/build.py alone: no other
    module of the run's packages applies a stage outside the module that defines it."""
    users = {}
    for name, path in modules(ROOT).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
        for stage in (set(STAGES) & _calls(tree)) - defined:
            users.setdefault(stage, set()).add(name)
    assert users.keys() == set(STAGES)
    assert {stage: found - {"pipeline.build"} for stage, found in users.items() if found - {"pipeline.build"}} == {}


def _takes_run_config(tree: ast.Module) -> bool:
    """Whether a function here takes the run's configuration (a ``config`` parameter that is not
    annotated as another config type, or one annotated ``RunConfig``)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in node.args.args + node.args.kwonlyargs:
                annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
                if "RunConfig" in annotation or (arg.arg == "config" and not annotation):
                    return True
    return False


def test_the_run_configuration_reaches_few_modules():
    """The RunConfig goes from the command line to the graph builder and the commit; stages get
    their own small configs (FetchConfig, DecodeConfig, InferenceConfig, ...)."""
    found = sorted(name for name, path in modules(ROOT).items()
                   if name.startswith("pipeline.") and _takes_run_config(ast.parse(path.read_text(encoding="utf-8"))))
    assert "pipeline.build" in found and "pipeline.sharded" in found
    assert len(found) <= 12, found
