"""Dependencies point one way: face -> studies -> cluster -> model -> base, with no circles.

Every module under overcommit/ is parsed with `ast`; every `import` and `from ... import`
counts, at module level, in functions and under `if TYPE_CHECKING:` alike (relative imports
resolved). The overcommit-internal imports form a graph that must have no cycle, and no module
may import from a layer above its own. The model (hosts, guests, mechanisms, migration,
workloads) must not import Ray, Redis or the cluster layer at all, and importing it must not
load Ray or the Redis client.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "overcommit"

#: Layers, bottom (0) to top. A module may import its own layer and the layers below.
LAYERS = ("base", "model", "cluster", "studies", "face")
_EXACT = {
    "overcommit": "face",  # the package init: lazily exposes the API
    "overcommit.__main__": "face",
    "overcommit.cli": "face",
    "overcommit.api": "face",
    "overcommit.report": "face",
    "overcommit.report_text": "face",
    "overcommit.findings_report": "face",
    "overcommit.gameday_cli": "face",
    "overcommit.findings_cli": "face",
    "overcommit.tables": "face",
    "overcommit.compare": "studies",
    "overcommit.drill": "studies",
    "overcommit.capacity": "studies",
    "overcommit.studies": "studies",
    "overcommit.findings": "studies",
    "overcommit.gameday": "studies",
    "overcommit.dashboard": "studies",
    "overcommit.units": "base",
    "overcommit.profiles": "base",
    "overcommit.rng": "base",
    "overcommit.metrics": "base",
    "overcommit.output": "base",
    "overcommit.version": "base",
}
_TREES = {  # a module and everything under it
    "overcommit.cluster": "cluster",
    "overcommit.nodes": "model",
    "overcommit.migration": "model",
    "overcommit.workloads": "model",
    "overcommit.stores": "base",
    "overcommit.config": "base",
}

#: Known imports that break the rules, each with the change that removes it.
ALLOWED = {
    # the registry of mechanisms (`_registry`, `build_mechanism`) lives in the module that
    # defines their base class `Mechanism`; removed when it moves to `overcommit.nodes`
    # (everyone outside nodes/ already imports `build_mechanism` from there)
    *(
        ("overcommit.nodes.mechanism", f"overcommit.nodes.{m}")
        for m in (
            "balloon",
            "cached_disk",
            "cleancache",
            "frontswap",
            "host_swap",
            "none",
            "page_sharing",
            "ramdisk",
            "selfballoon",
            "zswap",
        )
    ),
}

#: What the model layer must never import (the top-level name, or the package prefix).
MODEL_FORBIDDEN = ("ray", "redis", "overcommit.cluster")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (an overcommit module, or any top-level name)
    line: int


def layer(module: str) -> str | None:
    if module in _EXACT:
        return _EXACT[module]
    for tree, name in _TREES.items():
        if module == tree or module.startswith(tree + "."):
            return name
    return None


def modules(pkg: Path = PKG) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    out = {}
    for path in sorted(pkg.rglob("*.py")):
        parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:`: imports for annotations, never executed."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and (
            (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        ):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports_of(name: str, path: Path, known: set[str]) -> list[Import]:
    """Every import statement of a module that runs (module or function level; not those
    under `if TYPE_CHECKING:`), as the modules it names."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[Import] = []
    skip = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [Import(name, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"  # `from pkg import module` names the module
                out.append(Import(name, sub if sub in known else mod, node.lineno))
    return out


def graph(pkg: Path = PKG) -> tuple[dict[str, Path], list[Import]]:
    """The package's modules and all their imports (minus the allowed ones)."""
    mods = modules(pkg)
    known = set(mods)
    edges = [
        imp
        for name, path in mods.items()
        for imp in imports_of(name, path, known)
        if (imp.source, imp.target) not in ALLOWED
    ]
    return mods, edges


def internal(target: str, known: set[str]) -> str | None:
    """The overcommit module an import names (the longest known prefix), if any."""
    parts = target.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in known:
            return cand
        parts.pop()
    return None


def cycles(nodes: set[str], edges: list[Import]) -> list[list[str]]:
    """One cycle (as a closed path) in every strongly connected component that has one."""
    succ: dict[str, set[str]] = {n: set() for n in nodes}
    for e in edges:
        t = internal(e.target, nodes)
        if t is not None:
            succ[e.source].add(t)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[set[str]] = []
    counter = 0

    def visit(v: str) -> None:  # Tarjan
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            comps.append(comp)

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    out = []
    for comp in comps:
        start = min(comp)
        if len(comp) == 1 and start not in succ[start]:
            continue
        # breadth-first from `start` back to itself within the component
        prev: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(succ[v] & comp):
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [start]
        v = found
        while v != start:
            path.append(v)
            v = prev[v]
        out.append([start, *reversed(path[1:]), start])
    return out


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def layer_violations(mods: dict[str, Path], edges: list[Import]) -> list[str]:
    known = set(mods)
    out = []
    for e in edges:
        t = internal(e.target, known)
        if t is None:
            continue
        ls, lt = layer(e.source), layer(t)
        if LAYERS.index(lt) > LAYERS.index(ls):
            out.append(f"{shown(mods[e.source])}:{e.line}: {e.source} ({ls}) imports {t} ({lt})")
    return out


def model_violations(mods: dict[str, Path], edges: list[Import]) -> list[str]:
    out = []
    for e in edges:
        if layer(e.source) != "model":
            continue
        for bad in MODEL_FORBIDDEN:
            if e.target == bad or e.target.startswith(bad + "."):
                where = f"{shown(mods[e.source])}:{e.line}"
                out.append(f"{where}: {e.source} (model) imports {e.target}")
    return out


# -- the package as it is ---------------------------------------------------------------------
def test_every_module_has_a_layer():
    unplaced = [m for m in modules() if layer(m) is None]
    assert not unplaced, f"modules in no layer (add them to _EXACT or _TREES): {unplaced}"


def test_no_import_cycles():
    mods, edges = graph()
    found = cycles(set(mods), edges)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_imports_point_down():
    mods, edges = graph()
    bad = layer_violations(mods, edges)
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(bad)


def test_model_imports_no_ray_redis_or_cluster():
    mods, edges = graph()
    bad = model_violations(mods, edges)
    assert not bad, "\n".join(bad)


def private_store_imports(pkg: Path = PKG) -> list[str]:
    """`from overcommit.stores... import _name` outside the storage layer: a private name
    used across layers (the store ops the cluster drives are public)."""
    out = []
    for name, path in modules(pkg).items():
        if name.startswith("overcommit.stores"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "overcommit.stores"
            ):
                for a in node.names:
                    if a.name.startswith("_"):
                        out.append(f"{shown(path)}:{node.lineno}: {node.module}.{a.name}")
    return out


def test_no_private_store_names_imported():
    bad = private_store_imports()
    assert not bad, "private store names imported from another layer:\n" + "\n".join(bad)


def test_allowed_exceptions_still_exist():
    """An allow-list entry whose import is gone must be deleted (so it cannot hide a new one)."""
    mods = modules()
    known = set(mods)
    present = {
        (imp.source, internal(imp.target, known))
        for name, path in mods.items()
        for imp in imports_of(name, path, known)
    }
    stale = sorted(ALLOWED - present)
    assert not stale, f"delete these entries from ALLOWED, the imports are gone: {stale}"


def test_model_loads_without_ray_or_redis():
    """The model (hosts, the guest's paging core, every mechanism, migration) imports neither
    Ray nor Redis: a fresh interpreter that loads all of it has neither in sys.modules."""
    code = (
        "import sys\n"
        "import overcommit.nodes.host\n"
        "import overcommit.nodes.guest\n"
        "import overcommit.nodes.kernel.model\n"
        "from overcommit.nodes.mechanism import MECHANISMS, build_mechanism, guest_hooks\n"
        "mechs = [build_mechanism(m) for m in MECHANISMS]\n"
        "hooks = [guest_hooks(m.guest_features) for m in mechs]\n"
        "import overcommit.migration\n"
        "import overcommit.migration.planner\n"
        "import overcommit.migration.transfer\n"
        "print(sorted(m for m in ('ray', 'redis') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# -- the checks catch what they are for --------------------------------------------------------
def _fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    pkg = tmp_path / "overcommit"
    for rel, text in files.items():
        p = pkg / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return pkg


def test_checks_catch_a_lazy_cycle_an_upward_and_a_forbidden_import(tmp_path):
    pkg = _fake_package(
        tmp_path,
        {
            "__init__.py": "",
            "compare.py": "from overcommit.drill import x\n",
            "drill.py": "def f():\n    from overcommit import compare\n",
            "nodes/__init__.py": "",
            "nodes/host.py": "def f():\n    from ..cluster.engine import run\n    import ray\n",
            "cluster/__init__.py": "",
            "cluster/engine.py": "from overcommit.nodes import host\nrun = 1\n",
            "units.py": "import redis\n",
        },
    )
    mods, edges = graph(pkg)
    assert cycles(set(mods), edges) == [
        ["overcommit.cluster.engine", "overcommit.nodes.host", "overcommit.cluster.engine"],
        ["overcommit.compare", "overcommit.drill", "overcommit.compare"],
    ]
    ups = layer_violations(mods, edges)
    assert len(ups) == 1 and "host.py:2: overcommit.nodes.host (model)" in ups[0]
    assert ups[0].endswith("imports overcommit.cluster.engine (cluster)")
    model = model_violations(mods, edges)
    assert [m.rsplit(" ", 1)[1] for m in model] == ["overcommit.cluster.engine", "ray"]
