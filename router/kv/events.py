"""vLLM 0.32's KV cache event messages (``vllm/distributed/kv_events.py``) as plain dataclasses.

Wire format of ``ZmqEventPublisher``:

- PUB socket, one multipart message per batch: ``(topic, seq, payload)``; ``topic`` is the
  configured topic (UTF-8, default empty), ``seq`` an 8-byte big-endian counter starting at 0
  in each publisher (a restarted engine starts again at 0), ``payload`` a msgpack
  ``KVEventBatch``: the array ``[ts, events, data_parallel_rank]``, each event a map tagged
  ``"type": "BlockStored" | "BlockRemoved" | "AllBlocksCleared"`` (fields left at their default
  may be absent; fields added by later versions are ignored here).
- ROUTER replay socket (only if ``replay_endpoint`` is set): a DEALER sends
  ``(b"", start_seq)`` (8 bytes, big-endian) and receives every buffered batch with
  ``seq >= start_seq`` as ``(b"", topic, seq, payload)``, then the end marker
  ``(b"", b"", seq=-1 (signed), b"")``. The buffer keeps the last ``buffer_steps`` batches
  (default 10,000), so the first batch replayed may be later than asked for.

Block hashes arrive as 64-bit ints (or bytes, with ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0``)
and are normalised to ints by :func:`router.kv.hashing.external_hash`. Decoding raises
:class:`EventDecodeError` for a message that is not a batch; unknown event types are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from router.kv.hashing import external_hash

END_SEQ = -1  # the replay socket's end-of-replay marker
SEQ_BYTES = 8


class EventDecodeError(ValueError):
    """A message from a publisher that is not a well-formed KV event batch."""


@dataclass(frozen=True)
class BlockStored:
    """Full blocks the engine now holds: ``block_hashes[0]``'s parent is ``parent_hash``
    (None: the first block of a prompt), each later block's parent is the one before it;
    ``token_ids`` are the tokens of all of them, ``block_size`` per block."""

    block_hashes: tuple[int, ...]
    parent_hash: int | None
    token_ids: tuple[int, ...]
    block_size: int
    lora_name: str | None = None
    medium: str | None = None
    group_idx: int | None = None


@dataclass(frozen=True)
class BlockRemoved:
    """Blocks the engine evicted (their slots were reused); they no longer match a prompt."""

    block_hashes: tuple[int, ...]
    medium: str | None = None
    group_idx: int | None = None


@dataclass(frozen=True)
class AllBlocksCleared:
    """The engine dropped its whole prefix cache (``reset_prefix_cache``)."""


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(frozen=True)
class EventBatch:
    """One published message: its sequence number, the engine's wall-clock time, the events."""

    seq: int
    ts: float
    events: tuple[KvEvent, ...]
    topic: str = ""
    data_parallel_rank: int | None = None


def decode_seq(frame: bytes) -> int:
    """A sequence-number frame (signed, so the replay end marker reads as -1)."""
    if len(frame) != SEQ_BYTES:
        raise EventDecodeError(f"sequence frame of {len(frame)} bytes, expected {SEQ_BYTES}")
    return int.from_bytes(frame, "big", signed=True)


def encode_seq(seq: int) -> bytes:
    """A replay request's start frame."""
    return seq.to_bytes(SEQ_BYTES, "big", signed=seq < 0)


def decode_message(frames: Sequence[bytes]) -> EventBatch:
    """A PUB message ``(topic, seq, payload)`` as an :class:`EventBatch`."""
    if len(frames) != 3:
        raise EventDecodeError(f"expected 3 frames (topic, seq, payload), got {len(frames)}")
    topic, seq, payload = frames
    return decode_payload(payload, seq=decode_seq(seq), topic=topic.decode("utf-8", "replace"))


def decode_payload(payload: bytes, *, seq: int, topic: str = "") -> EventBatch:
    """A msgpack ``KVEventBatch`` payload."""
    try:
        raw = msgspec.msgpack.decode(payload)
    except msgspec.DecodeError as e:
        raise EventDecodeError(f"payload is not msgpack: {e}") from e
    if not isinstance(raw, list) or len(raw) < 2 or not isinstance(raw[1], list):
        raise EventDecodeError("payload is not a [ts, events, ...] batch")
    rank = raw[2] if len(raw) > 2 else None
    events = tuple(e for e in map(_event, raw[1]) if e is not None)
    return EventBatch(seq=seq, ts=float(raw[0]), events=events, topic=topic, data_parallel_rank=rank)


def _event(raw: Any) -> KvEvent | None:
    if not isinstance(raw, dict):
        raise EventDecodeError(f"event is not a map: {raw!r}")
    kind = raw.get("type")
    try:
        if kind == "BlockStored":
            return BlockStored(
                block_hashes=tuple(external_hash(h) for h in raw["block_hashes"]),
                parent_hash=_maybe_hash(raw.get("parent_block_hash")),
                token_ids=tuple(raw["token_ids"]),
                block_size=int(raw["block_size"]),
                lora_name=raw.get("lora_name"),
                medium=raw.get("medium"),
                group_idx=raw.get("group_idx"),
            )
        if kind == "BlockRemoved":
            hashes = tuple(external_hash(h) for h in raw["block_hashes"])
            return BlockRemoved(hashes, medium=raw.get("medium"), group_idx=raw.get("group_idx"))
    except (KeyError, TypeError, ValueError) as e:
        raise EventDecodeError(f"malformed {kind} event: {e!r}") from e
    if kind == "AllBlocksCleared":
        return AllBlocksCleared()
    return None  # an event type added after vLLM 0.32


def _maybe_hash(value: bytes | int | None) -> int | None:
    return None if value is None else external_hash(value)
