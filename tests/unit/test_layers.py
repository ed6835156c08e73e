"""The import arrows of the package point one way: read from the source with ast, every
import counted (those under TYPE_CHECKING and inside functions too)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "extsock_py"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every extsock_py module `path` imports (`from a import b` counts as a and a.b)."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else ""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "extsock_py"}


@functools.cache  # read once: every check below walks the same source
def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _offenders(importers: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for module, imported in _graph().items():
        if not module.startswith(importers):
            continue
        for name in sorted(imported):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{module} imports {name}")
    return out


@pytest.mark.parametrize(
    ("importers", "forbidden"),
    [
        # Nothing below the composition root knows the main loop or the root itself.
        ("extsock_py.usecases", ("extsock_py.mainloop", "extsock_py.app", "extsock_py.daemon")),
        ("extsock_py.adapters", ("extsock_py.mainloop", "extsock_py.app", "extsock_py.daemon")),
        ("extsock_py.domain", ("extsock_py.mainloop", "extsock_py.app", "extsock_py.daemon")),
        ("extsock_py.interfaces", ("extsock_py.mainloop", "extsock_py.app", "extsock_py.daemon")),
        # The main loop drives a service it knows only by its protocol.
        ("extsock_py.mainloop", ("extsock_py.usecases", "extsock_py.adapters", "extsock_py.app")),
        # Usecases speak through ports, never to an adapter.
        ("extsock_py.usecases", ("extsock_py.adapters",)),
        # Ports and the domain depend on nothing above them.
        ("extsock_py.interfaces", ("extsock_py.usecases", "extsock_py.adapters")),
        (
            "extsock_py.domain",
            ("extsock_py.interfaces", "extsock_py.usecases", "extsock_py.adapters"),
        ),
    ],
)
def test_no_import_points_back_up(importers: str, forbidden: tuple[str, ...]) -> None:
    assert _offenders(importers, forbidden) == []


def test_the_graph_is_read() -> None:
    """The checks above would pass on an empty graph: make sure it holds the known arrows."""
    graph = _graph()
    assert "extsock_py.mainloop" in graph["extsock_py.app"]
    assert "extsock_py.interfaces.operator" in graph["extsock_py.adapters.control.server"]
    assert "extsock_py.domain.errors" in graph["extsock_py.mainloop"]


def test_the_adapters_share_one_operator_through_the_port() -> None:
    """The control socket and metrics take an operator; they never build one."""
    for module in ("adapters/control/server.py", "adapters/metrics.py"):
        text = (PACKAGE / module).read_text()
        assert "OperatorUsecase(" not in text, module
