"""router.kv.events decodes what vLLM 0.32's ZmqEventPublisher encodes (its own structs, its
encoder, its frame layout)."""

from __future__ import annotations

import msgspec
import pytest

from router.kv.events import (
    END_SEQ,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventDecodeError,
    decode_message,
    decode_payload,
    decode_seq,
    encode_seq,
)

kv_events = pytest.importorskip("vllm.distributed.kv_events")


def _vllm_batch() -> object:
    return kv_events.KVEventBatch(
        ts=123.5,
        events=[
            kv_events.BlockStored(
                block_hashes=[2**64 - 1, 7], parent_block_hash=None, token_ids=[1, 2, 3, 4],
                block_size=2, lora_id=None, medium="GPU", lora_name=None, group_idx=0,
            ),
            kv_events.BlockStored(
                block_hashes=[b"\x01" * 32], parent_block_hash=7, token_ids=[5, 6], block_size=2,
                lora_id=3, medium="GPU", lora_name="zubrowka",
            ),
            kv_events.BlockRemoved(block_hashes=[7], medium="GPU"),
            kv_events.AllBlocksCleared(),
        ],
        data_parallel_rank=0,
    )


def test_a_published_message_decodes() -> None:
    payload = msgspec.msgpack.Encoder().encode(_vllm_batch())
    batch = decode_message([b"replica-a", (41).to_bytes(8, "big"), payload])
    assert (batch.seq, batch.ts, batch.topic, batch.data_parallel_rank) == (41, 123.5, "replica-a", 0)
    stored, stored_bytes, removed, cleared = batch.events
    assert stored == BlockStored((2**64 - 1, 7), None, (1, 2, 3, 4), 2, None, "GPU", 0)
    assert stored_bytes.block_hashes == (int.from_bytes(b"\x01" * 32, "big") & (2**64 - 1),)
    assert (stored_bytes.parent_hash, stored_bytes.lora_name) == (7, "zubrowka")
    assert removed == BlockRemoved((7,), "GPU", None)
    assert cleared == AllBlocksCleared()


def test_unknown_event_types_are_skipped() -> None:
    payload = msgspec.msgpack.encode([1.0, [{"type": "SomethingNew", "x": 1}, {"type": "AllBlocksCleared"}]])
    assert decode_payload(payload, seq=0).events == (AllBlocksCleared(),)


@pytest.mark.parametrize(
    "frames",
    [
        [b"", (1).to_bytes(8, "big")],
        [b"", b"\x00", msgspec.msgpack.encode([1.0, []])],
        [b"", (1).to_bytes(8, "big"), b"\xc1"],
        [b"", (1).to_bytes(8, "big"), msgspec.msgpack.encode({"ts": 1})],
        [b"", (1).to_bytes(8, "big"), msgspec.msgpack.encode([1.0, [{"type": "BlockRemoved"}]])],
    ],
)
def test_malformed_messages_raise(frames: list[bytes]) -> None:
    with pytest.raises(EventDecodeError):
        decode_message(frames)


def test_sequence_frames_round_trip_and_the_end_marker_is_minus_one() -> None:
    assert decode_seq(kv_events.ZmqEventPublisher.END_SEQ) == END_SEQ
    assert decode_seq(encode_seq(2**40)) == 2**40
    assert int.from_bytes(encode_seq(5), "big") == 5  # as the replay socket reads a request
