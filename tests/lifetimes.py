"""Expensive test resources, started once and stopped as soon as their last test is done.

A running graph or engine costs memory and CPU while it waits (Ray's processes, vLLM's polling
engine loops): one left up until the end of the session slows every test after its last user.
The suite runs in an order that keeps each resource's users together:

1. unit and deploy tests (no engine, no Ray), then
2. integration tests, grouped by the shared engine they use (one runs at a time), then
3. end-to-end tests on the session's demo graph, then the Parlant adapter's tests on it (the
   cloud stand-in's other user, an integration module, runs just before them),
4. then the end-to-end tests on graphs of their own.

Within a group the order of modules and tests is kept. A resource is a session fixture that calls
:func:`stop_after_last_use` with its name and a stop function; it is stopped after the teardown of
the last collected test that uses it (directly or through another fixture), or at the end of the
session, whichever comes first. The run order may be shuffled (``--random-order``): the last user
is found after shuffling, so each resource still stops once nothing needs it.

With pytest-xdist (``-n 2``) the tests that share a resource go to one worker as one unit
(:class:`ResourceScheduling`): the graphs' tests, the shared engines' tests, and each module of
the rest as a unit of its own; the long units first, each to the next free worker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

_TIERS = ("unit", "deploy", "integration", "e2e", "parlant")
_ENGINES = ("smollm2_engine", "deepseek_engine", "minilm_engine")
_LAST_USERS = pytest.StashKey[dict[str, str]]()
_STOPS = pytest.StashKey[dict[str, Callable[[], None]]]()


def tier(item: pytest.Item) -> str:
    """The folder under tests/ that holds ``item``."""
    parts = Path(str(item.path)).parts
    return parts[parts.index("tests") + 1] if "tests" in parts else ""


def _on_graphs(item: pytest.Item) -> bool:
    return tier(item) in ("e2e", "parlant") or "cloud_standin" in item.fixturenames


# The unit of work of a test for pytest-xdist, from its id alone (the scheduler sees no fixtures):
# the tiers of the graphs, and the integration module that shares the graphs' cloud stand-in; the
# integration modules that share the session engines. Any other module is a unit of its own, so
# that the integration modules with engines of their own go to whichever worker is free.
_GRAPHS = ("tests/e2e/", "tests/parlant/", "tests/integration/test_cloud_provider_vllm.py")
_ENGINE_USERS = ("tests/integration/test_reference.py", "tests/integration/test_runtime.py")
# Units started first, longest first: the graphs' (~12 minutes), then the modules of 4-8 minutes.
_LONG_UNITS = ("graphs", "tests/integration/test_quantization.py", "engines", "tests/integration/test_doctor.py")


# e2e modules with a graph of their own and no test of the session's graphs: units of their own
_OWN_GRAPHS = ("tests/e2e/test_kv_routing.py",)


def work_unit(nodeid: str) -> str:
    """``graphs``, ``engines``, or the test's module."""
    if nodeid.startswith(_OWN_GRAPHS):
        return nodeid.split("::")[0]
    if nodeid.startswith(_GRAPHS):
        return "graphs"
    if nodeid.startswith(_ENGINE_USERS):
        return "engines"
    return nodeid.split("::")[0]


def _unit_rank(item: pytest.Item) -> int:
    unit = work_unit(item.nodeid)
    return _LONG_UNITS.index(unit) if unit in _LONG_UNITS else len(_LONG_UNITS)


def _rank(item: pytest.Item) -> tuple[int, int]:
    name = tier(item)
    if _on_graphs(item):  # the stand-in's integration user, the demo graph's users, then the rest
        if name not in ("e2e", "parlant"):
            return (_TIERS.index("integration") + 1, 0)
        on_demo_graph = "deployment" in item.fixturenames
        return (_TIERS.index("e2e") + 1, (1 if name == "e2e" else 2) if on_demo_graph else 3)
    rank = _TIERS.index(name) if name in _TIERS else len(_TIERS)
    engines = [i for i, fixture in enumerate(_ENGINES) if fixture in item.fixturenames]
    return (rank, 1 + min(engines) if engines else 0)


def _shuffled(config: pytest.Config) -> bool:
    if not config.pluginmanager.hasplugin("random_order"):
        return False
    from random_order.config import Config

    return bool(Config(config).is_enabled)


def _distributed(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) or hasattr(config, "workerinput")


@pytest.hookimpl(trylast=True)  # after any shuffling plugin: its order decides the last users
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _shuffled(config):
        items.sort(key=_rank)  # stable: the order within a rank is the collection order
        if _distributed(config):  # the long units first: each worker starts one, then takes the next
            items.sort(key=_unit_rank)
    last: dict[str, str] = {}
    for item in items:
        for name in item.fixturenames:
            last[name] = item.nodeid
    config.stash[_LAST_USERS] = last
    config.stash[_STOPS] = {}


def stop_after_last_use(request: pytest.FixtureRequest, name: str, stop: Callable[[], None]) -> None:
    """Call ``stop`` after the last test using the fixture ``name`` (``request``'s session)."""
    request.config.stash.setdefault(_STOPS, {})[name] = stop


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    yield
    last, stops = item.config.stash.get(_LAST_USERS, {}), item.config.stash.get(_STOPS, {})
    for name in [n for n, nodeid in last.items() if nodeid == item.nodeid and n in stops]:
        stops.pop(name)()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class ResourceScheduling(LoadScopeScheduling):
        """pytest-xdist's scope scheduling with :func:`work_unit` as the scope, in run order."""

        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # keep the run order: the long units first
    return ResourceScheduling(config, log)
