"""The package's layering (docs/architecture.md), checked on the source: a lower layer never imports a higher one.

Every import counts, function-local and ``TYPE_CHECKING`` ones included: a deferred import still makes the lower
layer depend on the higher one, and the cycle only shows up later, as an import error in some entry point.
"""

import ast
from pathlib import Path

import pytest


PACKAGE_DIR = Path(__file__).resolve().parent.parent / "rrpo_hf"

# Lowest first. Packages that share a rank are siblings: neither may import the other, except through SIBLING_ALLOWED.
LAYER_RANK = {
    "utils": 0,
    "ops": 1,
    "data": 2,
    "models": 3,
    "evaluation": 4,
    "testbed": 4,
    "rewards": 4,
    "trainers": 5,
    "audit": 5,
    "study": 6,
    "script_utils": 7,
}
# Nothing crosses between the siblings: the generic token edits the probes and the testbed share live in `data`, and
# the testbed's OracleScorer fits the evaluation scorer protocol without importing it.
SIBLING_ALLOWED: set[tuple[str, str]] = set()
# The testbed is a leaf of the library: only the study (and the scripts) built on it may import it.
TESTBED_USERS = {"testbed", "study", "script_utils"}


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    return module.split(".")[1]


def lazy_public_names() -> dict[str, str]:
    """`rrpo_hf/__init__.py`'s public name -> module map, so that `from rrpo_hf import X` is judged by where X "
    "lives."""
    tree = ast.parse((PACKAGE_DIR / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "_IMPORT_STRUCTURE":
            structure = ast.literal_eval(node.value)
            return {name: f"rrpo_hf.{module}" for module, names in structure.items() for name in names}
    raise AssertionError("rrpo_hf/__init__.py has no _IMPORT_STRUCTURE table")


def imported_modules(
    path: Path, public_names: dict[str, str], package_dir: Path = PACKAGE_DIR
) -> list[tuple[int, str]]:
    """(line, rrpo_hf module) for every import of the package in the file, relative ones resolved."""
    module = module_name(path, package_dir)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "rrpo_hf"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "rrpo_hf":
                continue
            if target == "rrpo_hf":
                # `from rrpo_hf import X` resolves a public X lazily; `__version__` lives in the root itself.
                for alias in node.names:
                    if not alias.name.startswith("__"):
                        found.append((node.lineno, public_names.get(alias.name, f"rrpo_hf.{alias.name}")))
            elif node.module is None:
                # `from . import robustness`: each name is a submodule of the package.
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return found


def layering_violations() -> list[str]:
    public_names = lazy_public_names()
    violations = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if path == PACKAGE_DIR / "__init__.py":
            continue  # the lazy public API imports every layer by design
        source_layer = layer_of(module_name(path))
        for line, target in imported_modules(path, public_names):
            target_layer = layer_of(target) if target.count(".") else None
            if target_layer is None or target_layer == source_layer:
                continue
            source_rank, target_rank = LAYER_RANK[source_layer], LAYER_RANK[target_layer]
            allowed = target_rank < source_rank or (
                target_rank == source_rank
                and any(source_layer == src and target.startswith(dst) for src, dst in SIBLING_ALLOWED)
            )
            if not allowed:
                where = path.relative_to(PACKAGE_DIR.parent)
                violations.append(f"{where}:{line}: {source_layer} imports {target} ({target_layer})")
    return violations


def test_the_testbed_is_a_leaf():
    public_names = lazy_public_names()
    imports = [
        f"{path.relative_to(PACKAGE_DIR.parent)}:{line}: imports {target}"
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if path != PACKAGE_DIR / "__init__.py" and layer_of(module_name(path)) not in TESTBED_USERS
        for line, target in imported_modules(path, public_names)
        if target.startswith("rrpo_hf.testbed")
    ]
    assert not imports, "the library core imports the testbed:\n" + "\n".join(imports)


def test_every_package_has_a_layer():
    layers = {layer_of(module_name(path)) for path in PACKAGE_DIR.rglob("*.py") if path.parent != PACKAGE_DIR}
    layers |= {path.stem for path in PACKAGE_DIR.glob("*.py") if path.name != "__init__.py"}
    assert layers <= set(LAYER_RANK), f"add these to LAYER_RANK (and docs/architecture.md): {layers - set(LAYER_RANK)}"


def test_no_lower_layer_imports_a_higher_one():
    violations = layering_violations()
    assert not violations, "layering broken (lower -> higher import):\n" + "\n".join(violations)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from ..trainers import DiffROTrainer", "rrpo_hf.trainers"),
        ("from rrpo_hf import DiffROTrainer", "rrpo_hf.trainers"),
        ("import rrpo_hf.trainers.saving", "rrpo_hf.trainers.saving"),
        ("def f():\n    from ..trainers.saving import x", "rrpo_hf.trainers.saving"),
        ("from .. import study", "rrpo_hf.study"),
    ],
)
def test_import_resolution_sees_every_form(tmp_path, source, expected):
    # The checker is only as good as its resolution of each import form; a module at rrpo_hf/models/mod.py here.
    package_dir = tmp_path / "rrpo_hf"
    module_path = package_dir / "models" / "mod.py"
    module_path.parent.mkdir(parents=True)
    module_path.write_text(source, encoding="utf-8")
    found = imported_modules(module_path, {"DiffROTrainer": "rrpo_hf.trainers"}, package_dir)
    assert [target for _, target in found] == [expected]
