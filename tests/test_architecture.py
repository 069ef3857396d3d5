"""The package's floors (docs/architecture.md): no module imports from a floor above its own, and no import cycles.

Every module of ``openus_monai`` is parsed with ``ast`` (nothing is imported), mapped to its floor by its
sub-package, and each of its imports of the package is checked. Lazy imports inside functions count for the
floors too; for cycles only module-level imports count (what runs when a module is imported).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "openus_monai"

#: floors, bottom first; a module may import from its own floor and those below
FLOORS: list[tuple[str, ...]] = [
    ("openus_monai", "openus_monai.io", "openus_monai.options", "openus_monai.terminal", "openus_monai.networks.ops"),  # files, options, the terminal, kernels
    ("openus_monai.networks",),  # encoders, decoders, heads, checkpoint loading
    ("openus_monai.transforms", "openus_monai.losses", "openus_monai.data", "openus_monai.metrics"),
    ("openus_monai.methods",),  # pretraining methods (meta-architectures: networks + losses)
    ("openus_monai.handlers",),
    ("openus_monai.engines",),
    ("openus_monai.bundle",),
    ("openus_monai.studies", "openus_monai.__main__"),  # runs bundles; the command line
]

#: imports that break the floors today, each with the reason it is tolerated; remove an entry when it is fixed
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor_of(module: str) -> int:
    """Index into :data:`FLOORS` of the longest prefix that matches ``module``."""
    best, best_len = -1, -1
    for index, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best < 0 or (best == 0 and module.startswith("openus_monai.") and best_len == len("openus_monai")):
        raise KeyError(module)
    return best


def _imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """``(imported module of the package, at module level)`` for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports under a module-level ``if``/``try`` also run on import
        if isinstance(node, (ast.If, ast.Try)):
            top_level.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one
            names = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in node.names]
        for name in names:
            if name == "openus_monai" or name.startswith("openus_monai."):
                while name not in MODULES and "." in name:  # ``import openus_monai.data.x as y`` of a name
                    name = name.rsplit(".", 1)[0]
                found.append((name, id(node) in top_level))
    return found


IMPORTS: dict[str, list[tuple[str, bool]]] = {m: _imports(m, p) for m, p in MODULES.items()}


def test_every_module_has_a_floor():
    unmapped = []
    for module in MODULES:
        try:
            floor_of(module)
        except KeyError:
            unmapped.append(module)
    assert not unmapped, f"modules on no floor (add their package to FLOORS and docs/architecture.md): {unmapped}"


def test_no_import_from_a_floor_above():
    violations = []
    for module, imports in IMPORTS.items():
        for target, _ in imports:
            if floor_of(target) > floor_of(module) and (module, target) not in KNOWN_VIOLATIONS:
                violations.append(f"{module} (floor {floor_of(module)}) imports {target} (floor {floor_of(target)})")
    assert not violations, "imports from a floor above:\n" + "\n".join(sorted(set(violations)))


def test_known_violations_are_real():
    """Each tolerated exception still exists (a fixed one must leave the list, so that it cannot come back)."""
    for module, target in KNOWN_VIOLATIONS:
        if module not in MODULES:
            pytest.skip(f"{module} no longer exists: drop its KNOWN_VIOLATIONS entry")
        assert target in {t for t, _ in IMPORTS[module]}, f"{module} no longer imports {target}: drop the entry"


def test_no_import_cycles():
    graph = {m: sorted({t for t, top in imports if top and t != m}) for m, imports in IMPORTS.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_catch_what_they_should(tmp_path):
    """The parser sees relative, absolute and lazy imports, and the floor map orders them as documented."""
    assert floor_of("openus_monai.networks.ops.scan_cpu") < floor_of("openus_monai.networks.vmamba")
    assert floor_of("openus_monai.data.entries") == floor_of("openus_monai.transforms.grayscale")
    assert floor_of("openus_monai.handlers.resume") < floor_of("openus_monai.engines.pretrainer") < floor_of("openus_monai.bundle")
    with pytest.raises(KeyError):
        floor_of("openus_monai.unknown_room")
    source = tmp_path / "probe.py"
    source.write_text(
        "from ..handlers.resume import EpochSeedHandler\nimport openus_monai.io\n"
        "def f():\n    from openus_monai.bundle import world_size\n",
        encoding="utf-8",
    )
    found = _imports("openus_monai.data.probe", source)
    assert ("openus_monai.handlers.resume", True) in found and ("openus_monai.io", True) in found
    assert ("openus_monai.bundle", False) in found
