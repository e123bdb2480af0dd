"""engine.patches.shm_wakeup: the vLLM plugin that bounds an idle engine reader's missed-wakeup delay."""

from __future__ import annotations

import pytest
from vllm.distributed.device_communicators import shm_broadcast

from engine.patches import shm_wakeup


@pytest.fixture
def recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shm_broadcast, "SHM_READER_RECHECK_INTERVAL_MS", 5000)


def test_the_plugin_lowers_vllms_recheck_interval(recheck, monkeypatch) -> None:
    monkeypatch.delenv(shm_wakeup.ENV, raising=False)
    shm_wakeup.register()
    assert shm_broadcast.SHM_READER_RECHECK_INTERVAL_MS == shm_wakeup.RECHECK_MS
    # what a reader waits at most for an indefinite read: the interval, read when it waits
    assert shm_broadcast.MessageQueue.ReadTimeoutWithWarnings(None, should_warn=False).timeout_ms() == shm_wakeup.RECHECK_MS


def test_the_environment_overrides_it_and_zero_keeps_vllms(recheck, monkeypatch) -> None:
    monkeypatch.setenv(shm_wakeup.ENV, "50")
    shm_wakeup.register()
    assert shm_broadcast.SHM_READER_RECHECK_INTERVAL_MS == 50
    monkeypatch.setattr(shm_broadcast, "SHM_READER_RECHECK_INTERVAL_MS", 5000)
    monkeypatch.setenv(shm_wakeup.ENV, "0")
    shm_wakeup.register()
    assert shm_broadcast.SHM_READER_RECHECK_INTERVAL_MS == 5000


def test_the_plugin_is_registered_with_vllm() -> None:
    from importlib.metadata import entry_points

    names = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert names["turnout_shm_wakeup"] == "engine.patches.shm_wakeup:register"
    assert names["turnout_seeded_sampling"] == "engine.patches.seeded_sampling:register"
