"""The package layout of ARCHITECTURE.md, kept true: imports only point down the layers, and no modules import
each other in a circle. Every import counts, also those inside functions (deferred for start-up time)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ciliumctl"

# Layer of each package, top first; a module may import its own package or a package on a lower layer.
# Keep in step with ARCHITECTURE.md.
LAYERS = [
    {"cli"},
    {"node"},
    {"connectivity"},
    {"cluster", "flows"},
    {"datapath"},
    {"policy"},
    {"endpoints", "identity", "services"},
    {"base"},
]
RANK = {pkg: len(LAYERS) - i for i, layer in enumerate(LAYERS) for pkg in layer}
GENERATED = "ciliumctl.flows.pb"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if not module_name(p).startswith(GENERATED)}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """ciliumctl modules that `path` imports (a `from pkg import name` counts as the module pkg.name if it is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ciliumctl.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("ciliumctl"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if not m.startswith(GENERATED) and m != "ciliumctl"}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else "(top)"


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports_of(p, set(mods)) for m, p in mods.items()}


def test_only_packages_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py"], "modules belong in a package named after their step of the data's way"


def test_every_package_has_a_layer():
    packages = {package_of(m) for m in modules()} - {"(top)"}
    assert packages <= set(RANK), f"add {sorted(packages - set(RANK))} to LAYERS and ARCHITECTURE.md"


def test_imports_point_down():
    upward = []
    for mod, targets in graph().items():
        src = package_of(mod)
        for t in targets:
            dst = package_of(t)
            if dst != src and RANK.get(dst, 0) >= RANK.get(src, 0):
                upward.append(f"{mod} -> {t}")
    assert not upward, "imports that do not point down a layer:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for t in sorted(g.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "modules that import each other in a circle:\n" + "\n".join(cycles)


@pytest.mark.parametrize("doc", ["ARCHITECTURE.md"])
def test_architecture_names_every_package(doc):
    text = (PACKAGE.parent / doc).read_text()
    missing = [pkg for pkg in RANK if f"{pkg}/" not in text]
    assert not missing, f"{doc} does not describe {missing}"
