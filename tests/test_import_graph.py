"""No import cycles in common, device, trainer or firmware_bridge (docs/ARCHITECTURE.md; STYLE.md habit 15).

The graph is built from the source (AST), counting imports at any level: module top, inside functions (the lazy
imports of adapters and heavy libraries), and under ``if TYPE_CHECKING``. When two modules need each other, a third
module holds what they share; a function-level import must not hide a cycle.
"""

from __future__ import annotations

from tests.helpers import find_cycle, import_graph


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "device.pipeline" in graph["device.kiosk"]  # the graph is really built
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_sees_function_level_and_from_imports():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    # the real graph records imports made inside functions (device.app opens the link lazily)
    assert "firmware_bridge.factory" in import_graph()["device.app"]
