"""KV cache events from the real vLLM engine on the CPU, through router.kv's subscriber and index.

One SmolLM2 engine of its own with ``kv_events_config`` on loopback: the engine's PUB socket
connects to the subscriber's bound ``tcp://127.0.0.1`` port (vLLM binds only wildcard
endpoints), its replay ROUTER binds another. The KV cache is tiny (48 MiB: 17 blocks of 128 tokens,
the CPU backend's default block size), so a handful of distinct prompts evict the first one.

Checked: the router-side keys of a chat prompt, tokenized as the engine does (the checkpoint's
chat template with the generation prompt), equal the block hashes the engine publishes, block
for block; then eviction reaches the index as BlockRemoved and the prompt's match drops.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from engine.launch.plan import build_engine_args
from engine.launch.settings import EngineSettings
from engine.protocol import ModelRecord
from engine.runtime import LocalEngine
from router.kv.events import BlockRemoved, BlockStored, EventBatch
from router.kv.hashing import BlockHasher
from router.kv.index import KvIndex, ReplayRequest
from router.kv.prompt import PromptTokens
from router.kv.subscriber import KvEventSubscriber

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MiB = 1024 * 1024
REPLICA = "smollm2-0"
FILLER = "The quick brown fox jumps over the lazy dog near the quiet river bank. " * 36  # ~550 tokens


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Request number {i}. {FILLER} Summarise this."}]


class RecordingIndex(KvIndex):
    """The index, keeping every batch it is given (to compare with the engine's own view)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[EventBatch] = []

    def apply(self, replica: str, batch: EventBatch, *, replayed: bool = False) -> ReplayRequest | None:
        self.batches.append(batch)
        return super().apply(replica, batch, replayed=replayed)

    def events(self, kind: type) -> list[Any]:
        return [e for b in self.batches for e in b.events if isinstance(e, kind)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def events() -> AsyncIterator[tuple[RecordingIndex, KvEventSubscriber]]:
    index = RecordingIndex()
    port, replay_port = _free_port(), _free_port()
    subscriber = KvEventSubscriber(
        index, REPLICA, f"tcp://127.0.0.1:{port}", replay_endpoint=f"tcp://127.0.0.1:{replay_port}",
        bind=True, topic=REPLICA,
    )
    async with subscriber:
        yield index, subscriber


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(
    smollm2_record: ModelRecord, events: tuple[RecordingIndex, KvEventSubscriber]
) -> AsyncIterator[LocalEngine]:
    _, subscriber = events
    kv_events_config = {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": subscriber.endpoint,  # no wildcard: the engine connects to the subscriber
        "replay_endpoint": subscriber.replay_endpoint,  # always bound by the engine
        "topic": REPLICA,
    }
    settings = EngineSettings(
        max_model_len=1024, kv_cache_memory_bytes=48 * MiB, enable_prefix_caching=True,
        engine_args={"kv_events_config": kv_events_config},
    )
    async with await LocalEngine.start(build_engine_args(smollm2_record, settings)) as started:
        yield started


@pytest.fixture(scope="module")
def chat_ids(smollm2_record: ModelRecord) -> Callable[[list[dict[str, str]]], list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_record.path))

    def encode(messages: list[dict[str, str]]) -> list[int]:
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))

    return encode


async def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_router_keys_equal_the_engines_block_hashes(engine, events, chat_ids, smollm2_record) -> None:
    index, subscriber = events
    prompt = PromptTokens(str(smollm2_record.path)).ids({"messages": _messages(0)})  # as the router does
    assert prompt == chat_ids(_messages(0))
    await engine.chat(_messages(0), max_tokens=4)
    await _until(lambda: index.events(BlockStored))
    stored = {h: e for e in index.events(BlockStored) for h in e.block_hashes}
    block_size = index.events(BlockStored)[0].block_size
    hasher = BlockHasher(block_size, pythonhashseed=os.environ.get("PYTHONHASHSEED"))
    keys = hasher.block_keys(prompt)
    assert len(keys) == len(prompt) // block_size >= 3
    assert all(key in stored for key in keys), "the engine published other hashes than ours"
    for i, key in enumerate(keys):  # and each stored block is this prompt's block, in this chain
        event = stored[key]
        offset = event.block_hashes.index(key) * block_size
        assert list(event.token_ids[offset : offset + block_size]) == prompt[i * block_size : (i + 1) * block_size]
        assert (event.parent_hash if offset == 0 else event.block_hashes[offset // block_size - 1]) == (
            keys[i - 1] if i else None
        )
    await _until(lambda: index.match(keys, [REPLICA])[REPLICA] == len(keys))
    assert subscriber.stats.decode_errors == 0


async def test_eviction_reaches_the_index(engine, events, chat_ids) -> None:
    index, subscriber = events
    block_size = index.events(BlockStored)[0].block_size
    keys = BlockHasher(block_size, pythonhashseed=os.environ.get("PYTHONHASHSEED")).block_keys(chat_ids(_messages(0)))
    assert index.match(keys, [REPLICA])[REPLICA] == len(keys)
    for i in range(1, 13):  # distinct prompts, each ~5 blocks, until the first prompt's blocks are reused
        await engine.chat(_messages(i), max_tokens=4)
        removed = {h for e in index.events(BlockRemoved) for h in e.block_hashes}
        if removed & set(keys):
            break
    await _until(lambda: index.match(keys, [REPLICA])[REPLICA] < len(keys))
    removed = {h for e in index.events(BlockRemoved) for h in e.block_hashes}
    assert removed & set(keys), "the index lost blocks the engine never reported removed"
    stats, ever_stored = index.stats(REPLICA), {h for e in index.events(BlockStored) for h in e.block_hashes}
    assert stats.num_blocks < len(ever_stored) and stats.gaps == 0 and subscriber.stats.decode_errors == 0
    # the evicted prompt, sent again, is stored again and matches in full
    await engine.chat(_messages(0), max_tokens=4)
    await _until(lambda: index.match(keys, [REPLICA])[REPLICA] == len(keys))

