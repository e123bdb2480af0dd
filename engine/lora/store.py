"""The store's adapters: import, pull, register built (fine-tuned) adapters, list and remove them.

Adapters live beside the models (``adapters.json``; owned files under ``adapters/<base>/<name>/``)
and are always tied to a registered base model. Registration follows the store's rules: a change
is one locked, atomic registry write; a build runs in a staging directory and is moved into place
in one rename once it is complete, so an interrupted or failed build registers nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from engine.errors import ModelExistsError, ModelNotFoundError
from engine.lora.adapter import (
    AdapterRecord,
    AdapterSource,
    adapter_id,
    inspect_adapter,
    parse_adapter_id,
)
from engine.protocol import ModelRecord, validate_name
from engine.store import huggingface
from engine.store.registry import Registry

AdapterBuilder = Callable[[Path], dict[str, str]]


def adapter_registry(root: Path) -> Registry[AdapterRecord]:
    """The adapter registry of the store at ``root``."""
    return Registry(Path(root) / "adapters.json", record=AdapterRecord, key="adapters")


class ModelStore(Protocol):
    """What adapters need of the model store that holds them (:class:`engine.store.manager.LocalModelManager`)."""

    root: Path
    log: logging.Logger

    @property
    def staging_dir(self) -> Path: ...

    def get_model(self, model_id: str) -> ModelRecord: ...


class AdapterStore:
    """The adapters of one model store (``manager``)."""

    def __init__(self, manager: ModelStore) -> None:
        self.manager = manager
        self.registry = adapter_registry(manager.root)

    @property
    def adapters_dir(self) -> Path:
        return self.manager.root / "adapters"

    def list(self, base: str | None = None) -> list[AdapterRecord]:
        """Registered adapters, optionally of one base model, sorted by id."""
        records = sorted(self.registry.load().values(), key=lambda r: r.id)
        return [r for r in records if base is None or r.base == base]

    def get(self, value: str) -> AdapterRecord:
        """The adapter ``<base id>:<name>``; raises ModelNotFoundError (404)."""
        parse_adapter_id(value)
        record = self.registry.load().get(value)
        if record is None:
            raise ModelNotFoundError(f"adapter {value!r} is not registered", param="model")
        return record

    def register(self, base_id: str, path: Path, *, name: str | None = None, copy: bool = True) -> AdapterRecord:
        """Register a PEFT LoRA directory for ``base_id``; ``copy`` (default) puts a copy in the store."""
        path = Path(path).expanduser().resolve()
        name = validate_name(name or path.name)
        if not copy:
            return self._register(base_id, name, path, AdapterSource.PATH, str(path), owned=False)
        return self.register_built(base_id, name, lambda out: _copy_files(path, out), AdapterSource.PATH, str(path))

    def pull(self, base_id: str, repo_id: str, *, name: str | None = None, revision: str | None = None) -> AdapterRecord:
        """Download an adapter from the hub into the HF cache and register the snapshot in place."""
        name = validate_name(name or repo_id.rsplit("/", 1)[-1])
        self._fail_if_taken(base_id, name)
        path, commit = huggingface.download(repo_id, revision)
        return self._register(base_id, name, path, AdapterSource.HUGGINGFACE, repo_id, owned=False, revision=commit)

    def register_built(
        self, base_id: str, name: str, build: AdapterBuilder, source: AdapterSource, source_ref: str,
    ) -> AdapterRecord:
        """Run ``build(staging_dir)`` (it writes a PEFT directory and returns metadata), then check
        the result against its base, move it into the store and register it in one locked step."""
        name = validate_name(name)
        self._fail_if_taken(base_id, name)
        staging = self.manager.staging_dir / f"{os.getpid()}-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            metadata = build(staging)
            return self._register(base_id, name, staging, source, source_ref, owned=True, metadata=metadata)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def remove(self, value: str) -> AdapterRecord:
        """Unregister an adapter and delete its files if the store owns them."""
        parse_adapter_id(value)
        with self.registry.transaction() as records:
            record = records.pop(value, None)
            if record is None:
                raise ModelNotFoundError(f"adapter {value!r} is not registered", param="model")
        if record.owned and self.adapters_dir in record.path.parents:
            shutil.rmtree(record.path, ignore_errors=True)
        return record

    def _register(
        self, base_id: str, name: str, path: Path, source: AdapterSource, source_ref: str, *, owned: bool,
        revision: str | None = None, metadata: dict[str, str] | None = None,
    ) -> AdapterRecord:
        base = self.manager.get_model(base_id)
        facts = inspect_adapter(path, base)
        new_id = adapter_id(base.id, name)
        with self.registry.transaction() as records:
            if new_id in records:
                raise ModelExistsError(f"adapter {new_id!r} is already registered", param="name")
            if owned:
                final = self.adapters_dir / base.family.value / base.name / name
                shutil.rmtree(final, ignore_errors=True)  # an orphan left by a crash
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, final)
                path = final
            record = AdapterRecord(
                id=new_id, name=name, base=base.id, path=path, source=source, source_ref=source_ref,
                revision=revision, owned=owned, metadata=metadata or {}, **facts.model_dump(),
            )
            records[new_id] = record
        self.manager.log.info("registered adapter %s (rank %d, %s)", new_id, facts.rank, source.value)
        return record

    def _fail_if_taken(self, base_id: str, name: str) -> None:
        self.manager.get_model(base_id)  # the base must exist: 404 before any work
        if adapter_id(base_id, name) in self.registry.load():
            raise ModelExistsError(f"adapter {adapter_id(base_id, name)!r} is already registered", param="name")


def _copy_files(src: Path, out: Path) -> dict[str, str]:
    """Copy an adapter directory's regular files (links to files are copied as files)."""
    for entry in src.iterdir():
        if entry.is_file():
            shutil.copyfile(entry, out / entry.name)
    return {}
