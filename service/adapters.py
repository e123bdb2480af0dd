"""The entry's view of the store's LoRA adapters, re-read when the registry file changes.

The router asks it which adapters exist (an adapter registered after start is routed at once) and
the response cache asks it for an adapter's revision (a re-registered adapter of the same name
never replays the old one's answers). Reading costs a ``stat`` of the registry file per call; the
file is parsed again only when it changed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from engine.errors import StoreError
from engine.lora.adapter import AdapterRecord, is_adapter_id
from engine.lora.store import adapter_registry

log = logging.getLogger("turnout.adapters")


class AdapterCatalog:
    """The adapters registered in the store at ``root`` whose base is one of ``bases``."""

    def __init__(self, root: Path, bases: set[str]) -> None:
        self._registry = adapter_registry(root)
        self._bases = frozenset(bases)
        self._stamp: tuple[int, int] | None = None
        self._records: dict[str, AdapterRecord] = {}

    def records(self) -> dict[str, AdapterRecord]:
        """adapter id -> record, as the registry is now (the last good read if it is unreadable)."""
        try:
            stat = os.stat(self._registry.path)
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            try:
                loaded = self._registry.load() if stamp else {}
            except StoreError as e:
                log.warning("keeping the adapters read before: %s", e)
                return self._records
            self._records = {i: r for i, r in loaded.items() if r.base in self._bases}
            self._stamp = stamp
        return self._records

    def index(self) -> dict[str, str]:
        """adapter id -> base id (the router's view)."""
        return {i: r.base for i, r in self.records().items()}


class Revisions(Mapping[str, str]):
    """Target id -> revision: the models' fixed ones, and each adapter's registration."""

    def __init__(self, models: Mapping[str, str], adapters: AdapterCatalog) -> None:
        self._models = dict(models)
        self._adapters = adapters

    def __getitem__(self, target_id: str) -> str:
        if target_id in self._models:
            return self._models[target_id]
        record = self.records().get(target_id) if is_adapter_id(target_id) else None
        if record is None:
            raise KeyError(target_id)
        return f"{self._models.get(record.base, '')}+{record.created_at.isoformat()}"

    def records(self) -> dict[str, AdapterRecord]:
        return self._adapters.records()

    def __iter__(self) -> Iterator[str]:
        return iter([*self._models, *self.records()])

    def __len__(self) -> int:
        return len(self._models) + len(self.records())
