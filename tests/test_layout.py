"""The package's layering: no import cycle anywhere in ``lmc_ref``.

Each module's imports of other ``lmc_ref`` modules are read from its source
(``ast``: top-level and function-level imports alike, since a deferred import
is still a dependency), and the graph is searched for a cycle.  A package's
``__init__`` counts as a module of its own; ``from . import x`` depends on
``x``, not on the package.
"""

import ast
from pathlib import Path

import lmc_ref

ROOT = Path(lmc_ref.__file__).parent


def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts)


def _imports(path, name, modules):
    """The lmc_ref modules ``path`` (module ``name``) imports."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    out.add(sub)  # from pkg import module
                elif target in modules:
                    out.add(target)  # from module import name
    out.discard(name)
    return out


def import_graph():
    paths = {(_module_name(p) if p.name != "__init__.py" else _module_name(p.parent)): p
             for p in ROOT.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, name, modules) for name, path in paths.items()}


def find_cycle(graph):
    """One cycle of ``graph`` as a list of names, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_find_cycle_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_relative_and_deferred_imports():
    graph = import_graph()
    assert "lmc_ref.transformer.model" in graph["lmc_ref.predictors.transformer"]
    assert "lmc_ref.transformer.infer_cpu" in graph["lmc_ref.predictors.transformer"]
    assert "lmc_ref.coder" in graph["lmc_ref.transformer.infer_cpu"]


def test_no_import_cycle_in_lmc_ref():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_transformer_model_is_a_leaf():
    """``transformer/model.py`` imports nothing of lmc_ref above ``constants``."""
    assert import_graph()["lmc_ref.transformer.model"] <= {"lmc_ref.constants"}
