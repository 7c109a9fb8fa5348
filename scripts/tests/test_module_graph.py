"""No crate's modules import each other in a circle (scripts/module_graph.py)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "module_graph.py"
spec = importlib.util.spec_from_file_location("module_graph", SCRIPT)
graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(graph)


@pytest.mark.parametrize("crate", graph.CRATES)
def test_no_module_import_cycle(crate):
    imports = graph.imports(graph.modules(graph.ROOT / crate / "src"))
    assert graph.cycles(imports) == []


def test_a_cycle_through_siblings_is_found_and_the_tree_is_not_one():
    mods = {
        (): "mod a; mod b; mod c;",
        ("a",): "use crate::b::B; pub struct A;",
        ("b",): "use super::c::{C, D};\npub struct B;",
        # c names its parent and a child of its own: neither is a cycle.
        ("c",): "mod d;\nuse d::E;\nuse crate::{a::A, x};\npub struct C;",
        ("c", "d"): "use super::C; pub struct E;",
    }
    imports = graph.imports(mods)
    assert imports[("c",)] == {("a",)}
    assert imports[("c", "d")] == set()
    assert graph.cycles(imports) == [[("a",), ("b",), ("c",)]]
