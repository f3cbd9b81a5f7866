"""The shape of the house: no import cycle among nbp's modules, model files importing no nbp module inside a
function, files and functions of readable length, and every shipped recipe resolving to its command's config."""
import ast
from pathlib import Path

import pytest

from nbp.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nbp"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported_modules(node: ast.AST) -> list[str]:
    """nbp modules an import statement loads (`from nbp.a import b` loads nbp.a, and nbp.a.b if b is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in MODULES]
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nbp"):
        names = [f"{node.module}.{alias.name}" for alias in node.names]
        return [node.module, *(name for name in names if name in MODULES)]
    return []


def top_level_imports(tree: ast.Module) -> set[str]:
    """Imports executed when the module loads: module level, including inside if/try, not inside functions."""
    found, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if isinstance(node, ast.ClassDef):
                todo += node.body
            continue
        found.update(imported_modules(node))
        todo += [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]
    return found


def parents(module: str) -> list[str]:
    """Packages whose __init__ runs before the module: nbp.a.b needs nbp and nbp.a."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in MODULES]


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        edges = top_level_imports(ast.parse(path.read_text()))
        own = {name, *parents(name)}  # a package's __init__ importing its own submodules is no cycle
        graph[name] = {m for target in edges for m in (*parents(target), target)} - own
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_nbp_modules():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_model_files_import_no_nbp_module_inside_a_function():
    for path in (PACKAGE / "models").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [m for child in ast.walk(node) for m in imported_modules(child)]
                assert not inner, f"{path.name}:{node.name} imports {inner} inside the function"


def test_files_and_functions_stay_short():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= MAX_FILE_LINES, f"{path} has {len(text.splitlines())} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= MAX_FUNCTION_LINES, f"{path.name}:{node.name} has {length} lines"


RECIPES = {"tokenizer/*.yaml": "train-tokenizer", "scripts/lm_train/*.yaml": "train-lm",
           "scripts/lm_eval/*_sample.yaml": "sample", "scripts/lm_eval/*_real.yaml": "export-clips",
           "scripts/lm_eval/*_fvd.yaml": "eval", "scripts/lm_eval/crafter_*.yaml": "world-eval",
           "scripts/far_train/*.yaml": "train-far", "tokenizer/dcae/*.yaml": "train-dcae"}


LEFT_TO_THE_LAUNCHER = {"sample": {"lm", "tokenizer"}}  # scripts/lm_eval/launch.sh passes the model files


def shipped_recipes() -> list[tuple[str, str]]:
    return sorted((str(p.relative_to(ROOT)), command) for pattern, command in RECIPES.items()
                  for p in ROOT.glob(pattern))


def test_every_shipped_yaml_has_a_command():
    covered = {path for path, _ in shipped_recipes()}
    shipped = {str(p.relative_to(ROOT)) for folder in ("tokenizer", "scripts") for p in (ROOT / folder).rglob("*.yaml")}
    assert shipped == covered and len(covered) == len(shipped_recipes())


@pytest.mark.parametrize("recipe, command", shipped_recipes())
def test_every_shipped_recipe_resolves(recipe, command, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert command in COMMANDS
    assert main(["config", command, recipe]) == 0, capsys.readouterr().err
    resolved = capsys.readouterr().out
    unset = {line.split(":")[0].strip() for line in resolved.splitlines() if line.endswith("???")}
    assert unset <= LEFT_TO_THE_LAUNCHER.get(command, set()), f"{recipe} leaves {unset} of {command} unset"


def test_bf16_only_where_it_is_native(monkeypatch, caplog):
    """On a CPU without AMX or AVX-512 BF16, bf16 falls back to float32 with a notice, for training and sampling."""
    from nbp import runtime
    from nbp.training.runner import RunConfig

    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert not runtime.native_bf16("cpu") and not runtime.use_bf16(True, "cpu", "sampling")
    assert "running in float32" in caplog.text
    assert RunConfig(precision="auto", accelerator="cpu").lightning_precision() == "32-true"
    assert RunConfig(precision="bf16-mixed", accelerator="cpu").lightning_precision() == "32-true"
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert RunConfig(precision="auto", accelerator="cpu").lightning_precision() == "bf16-mixed"
    assert RunConfig(precision="bf16-mixed", accelerator="cpu").lightning_precision() == "bf16-mixed"


def test_progress_off_a_terminal_is_a_line_every_few_percent(capsys, monkeypatch):
    from nbp.io import progress as module

    monkeypatch.setattr(module, "on_terminal", lambda: False)
    assert list(module.progress(range(40), "tokenize", "clip")) == list(range(40))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 20 and lines[0].startswith("tokenize: 5% (2/40 clip), ") and lines[-1].endswith("0:00 left")
    resumed = module.ProgressLines(100, "training", "batch", initial=50)
    resumed.update(1)
    resumed.update(4)
    assert capsys.readouterr().err.startswith("training: 55% (55/100 batch)")
