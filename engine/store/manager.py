"""The model store: brings checkpoints onto the machine and keeps the registry of servable models.

Layout under the store root (``$TURNOUT_HOME``, default ``~/.cache/turnout``)::

    registry.json            the registry (see engine.store.registry)
    models/<family>/<name>/  checkpoints the store owns (imported GGUF/Ollama, copied, generated)
    staging/<pid>-<uuid>/    imports in progress; moved into models/ in one rename when complete
    ollama/                  an Ollama store that registry pulls are written into
    adapters.json            the LoRA adapters (see engine.lora.store)
    adapters/<family>/<base>/<name>/  adapters the store owns (copied, fine-tuned)

Downloads from the hub stay in the user's Hugging Face cache and custom directories stay where they
are; both are registered in place (``owned=False``) and never deleted by the store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from engine.errors import (
    ClientError,
    ModelExistsError,
    ModelNotFoundError,
)
from engine.lora.store import AdapterStore
from engine.protocol import (
    ModelRecord,
    ModelType,
    SourceKind,
    model_id,
    parse_model_id,
    validate_name,
)
from engine.store import huggingface, ollama, ollama_pull
from engine.store.checkpoint import inspect_checkpoint
from engine.store.files import copy_tree, pid_alive
from engine.store.gguf import convert_gguf_kept, suggested_name
from engine.store.registry import Registry

Builder = Callable[[Path], dict[str, str]]


def default_root() -> Path:
    """The store root: ``$TURNOUT_HOME`` or ``~/.cache/turnout``."""
    return Path(os.environ.get("TURNOUT_HOME") or Path.home() / ".cache" / "turnout")


class LocalModelManager:
    """Download, import, register, list and remove local models.

    All methods that touch the network or convert weights are ``async`` and run their blocking
    work in a thread. Every change to the registry is locked and atomic, so two commands may run
    at once; an import that fails or is interrupted registers nothing.
    """

    def __init__(self, root: Path | None = None, logger: logging.Logger | None = None) -> None:
        self.root = Path(root) if root else default_root()
        self.log = logger or logging.getLogger("turnout.store")
        self.registry = Registry(self.root / "registry.json")
        self.adapters = AdapterStore(self)

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def staging_dir(self) -> Path:
        return self.root / "staging"

    async def initialize(self) -> None:
        """Create the store's folders, clear abandoned imports and check the registry."""
        for folder in (self.models_dir, self.staging_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._clear_abandoned_staging()
        for record in self.registry.load().values():
            if not record.path.is_dir():
                self.log.warning("%s: checkpoint directory %s is missing", record.id, record.path)

    def list_models(self, model_type: ModelType | None = None) -> list[ModelRecord]:
        """Registered models, optionally of one family, sorted by id."""
        records = sorted(self.registry.load().values(), key=lambda r: r.id)
        return [r for r in records if model_type is None or r.family == model_type]

    def get_model(self, model_id: str) -> ModelRecord:
        """The record for ``model_id`` (``local/<family>/<name>``); raises ModelNotFoundError."""
        parse_model_id(model_id)
        record = self.registry.load().get(model_id)
        if record is None:
            raise ModelNotFoundError(f"model {model_id!r} is not registered", param="model")
        return record

    async def download_model(
        self,
        model_name: str,
        model_type: ModelType | None = None,
        source: SourceKind | str = SourceKind.HUGGINGFACE,
        *,
        name: str | None = None,
        revision: str | None = None,
        ollama_home: Path | None = None,
        registry_url: str | None = None,
    ) -> ModelRecord:
        """Bring ``model_name`` onto the machine from ``source`` and register it.

        ``model_name`` is a hub repo id (huggingface), a ``.gguf`` file (gguf), an Ollama reference
        such as ``smollm2:135m`` (ollama: the local Ollama store first, else a registry pull) or a
        checkpoint directory (path). ``model_type`` overrides family detection.
        """
        kind = SourceKind(source)
        if kind is SourceKind.HUGGINGFACE:
            return await self.pull_huggingface(model_name, model_type, name=name, revision=revision)
        if kind is SourceKind.GGUF:
            return await self.import_gguf(Path(model_name), model_type, name=name)
        if kind is SourceKind.OLLAMA:
            return await self.import_ollama(
                model_name, model_type, name=name, ollama_home=ollama_home, registry_url=registry_url
            )
        if kind is SourceKind.PATH:
            return await self.register_model(Path(model_name), model_type, name=name)
        raise ClientError(f"models cannot be downloaded from source {kind.value!r}", param="source")

    async def pull_huggingface(
        self, repo_id: str, model_type: ModelType | None = None, *, name: str | None = None,
        revision: str | None = None,
    ) -> ModelRecord:
        """Download from the hub into the HF cache and register the snapshot in place."""
        name = validate_name(name or repo_id.rsplit("/", 1)[-1])
        self.fail_if_taken(model_type, name)
        path, commit = await asyncio.to_thread(huggingface.download, repo_id, revision)
        return self._register(
            path, name=name, family=model_type, source=SourceKind.HUGGINGFACE,
            source_ref=repo_id, revision=commit, owned=False,
        )

    async def import_gguf(
        self, gguf_path: Path, model_type: ModelType | None = None, *, name: str | None = None,
        keep_quantized: bool = False,
    ) -> ModelRecord:
        """Convert a local ``.gguf`` file into a safetensors checkpoint and register it: bf16, or
        with ``keep_quantized`` (a quantized GGUF) int8 W8A8 (see :func:`convert_gguf_kept`)."""
        gguf_path = Path(gguf_path).expanduser().resolve()
        name = validate_name(name or suggested_name(gguf_path))
        return await self.import_built(
            lambda out: convert_gguf_kept(gguf_path, out, keep_quantized), name=name, family=model_type,
            source=SourceKind.GGUF, source_ref=str(gguf_path),
        )

    async def import_ollama(
        self, reference: str, model_type: ModelType | None = None, *, name: str | None = None,
        ollama_home: Path | None = None, registry_url: str | None = None, keep_quantized: bool = False,
    ) -> ModelRecord:
        """Import an Ollama model: from ``ollama_home`` if it is there, else pulled from a registry;
        ``keep_quantized`` as for :meth:`import_gguf`."""
        ref = ollama.OllamaRef.parse(reference)
        name = validate_name(name or (ref.name if ref.tag == "latest" else f"{ref.name}-{ref.tag}"))
        self.fail_if_taken(model_type, name)
        home = Path(ollama_home) if ollama_home else ollama.default_ollama_home()
        try:
            found = await asyncio.to_thread(ollama.resolve_local, ref, home)
        except ModelNotFoundError:
            self.log.info("%s is not in %s; pulling it from its registry", ref, home)
            pull_home = self.root / "ollama"
            found = await asyncio.to_thread(ollama_pull.pull, ref, pull_home, registry_url)

        def build(out: Path) -> dict[str, str]:
            meta = convert_gguf_kept(found.gguf_path, out, keep_quantized)
            return meta | ollama.store_metadata(found)

        return await self.import_built(
            build, name=name, family=model_type, source=SourceKind.OLLAMA,
            source_ref=str(ref), revision=found.digest,
        )

    async def register_model(
        self, path: Path, model_type: ModelType | None = None, *, name: str | None = None,
        copy: bool = False, source: SourceKind = SourceKind.PATH,
    ) -> ModelRecord:
        """Register a custom checkpoint directory, validated first; ``copy`` puts a copy in the store."""
        path = Path(path).expanduser().resolve()
        name = validate_name(name or path.name)
        if not copy:
            return self._register(
                path, name=name, family=model_type, source=source, source_ref=str(path), owned=False
            )
        inspect_checkpoint(path, name=name, family=model_type)  # fail before copying
        return await self.import_built(
            lambda out: copy_tree(path, out), name=name, family=model_type,
            source=source, source_ref=str(path),
        )

    async def import_built(
        self, build: Builder, *, name: str, family: ModelType | None, source: SourceKind,
        source_ref: str, revision: str | None = None,
    ) -> ModelRecord:
        """Run ``build(staging_dir)`` (which writes a checkpoint and returns its metadata), then
        move the result into the store and register it in one locked step."""
        name = validate_name(name)
        self.fail_if_taken(family, name)
        staging = self.staging_dir / f"{os.getpid()}-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            metadata = await asyncio.to_thread(build, staging)
            return self._register(
                staging, name=name, family=family, source=source, source_ref=source_ref,
                revision=revision, owned=True, metadata=metadata,
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def remove_model(self, model_id: str) -> ModelRecord:
        """Unregister ``model_id`` and delete its files if the store owns them.

        A model with adapters is refused (ModelExistsError, 409): remove its adapters first."""
        parse_model_id(model_id)
        adapters = [a.id for a in self.adapters.list(base=model_id)]
        if adapters:
            raise ModelExistsError(
                f"model {model_id!r} has adapters ({', '.join(adapters)}); remove them first", param="model",
            )
        with self.registry.transaction() as records:
            record = records.pop(model_id, None)
            if record is None:
                raise ModelNotFoundError(f"model {model_id!r} is not registered", param="model")
        if record.owned and self.models_dir in record.path.parents:
            await asyncio.to_thread(shutil.rmtree, record.path, True)
        return record

    def _register(
        self, path: Path, *, name: str, family: ModelType | None, source: SourceKind,
        source_ref: str, owned: bool, revision: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> ModelRecord:
        info = inspect_checkpoint(path, name=name, family=family)
        new_id = model_id(info.family, name)
        with self.registry.transaction() as records:
            if new_id in records:
                raise ModelExistsError(f"model {new_id!r} is already registered", param="name")
            if owned:
                final = self.models_dir / info.family.value / name
                shutil.rmtree(final, ignore_errors=True)  # an orphan left by a crash
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, final)
                path = final
            record = ModelRecord(
                id=new_id, name=name, path=path, source=source, source_ref=source_ref,
                revision=revision, owned=owned, metadata=metadata or {},
                **info.model_dump(exclude={"model_type"}),
            )
            records[new_id] = record
        self.log.info("registered %s (%s, %s)", new_id, info.architecture, source.value)
        return record

    def fail_if_taken(self, family: ModelType | None, name: str) -> None:
        """Fail fast, before a long download, when the id is known and already taken."""
        if family is not None and model_id(family, name) in self.registry.load():
            raise ModelExistsError(f"model {model_id(family, name)!r} is already registered", param="name")

    def _clear_abandoned_staging(self) -> None:
        for entry in self.staging_dir.iterdir():
            pid = entry.name.split("-", 1)[0]
            if not pid.isdigit() or not pid_alive(int(pid)):
                self.log.info("removing abandoned import %s", entry)
                shutil.rmtree(entry, ignore_errors=True)
