"""router.kv.hashing against vLLM 0.32's own prefix-cache hashing (kv_cache_utils), in process.

vLLM's hasher is driven with a stand-in request (the attributes get_request_block_hasher and
generate_block_hash_extra_keys read); NONE_HASH is vLLM's module state, set per test by its own
init_none_hash under the PYTHONHASHSEED the test chooses.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from engine.errors import ConfigError
from router.kv.hashing import BlockHasher, LoraKey, external_hash, hash_function

kv_utils = pytest.importorskip("vllm.v1.core.kv_cache_utils")
vllm_hashing = pytest.importorskip("vllm.utils.hashing")


def _tokens(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(49152) for _ in range(n)]


def _vllm_hashes(
    algo: str, tokens: list[int], hash_block_size: int, *, lora: LoraKey | None = None, salt: str | None = None
) -> list[bytes]:
    fn = vllm_hashing.get_hash_fn_by_name(algo)
    kv_utils.init_none_hash(fn)
    lora_request = SimpleNamespace(lora_name=lora.name, lora_path=lora.path) if lora else None
    request = SimpleNamespace(
        block_hashes=[], num_tokens=len(tokens), all_token_ids=tokens, mm_features=[],
        lora_request=lora_request, cache_salt=salt, prompt_embeds=None,
    )
    return kv_utils.get_request_block_hasher(hash_block_size, fn)(request)


@pytest.fixture
def seed(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str | None:
    value = getattr(request, "param", None)
    if value is None:
        monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    else:
        monkeypatch.setenv("PYTHONHASHSEED", value)
    return value


@pytest.mark.parametrize("seed", [None, "0", "12345"], indirect=True)
@pytest.mark.parametrize("algo", ["sha256", "sha256_cbor"])
@pytest.mark.parametrize("length", [0, 15, 16, 17, 130, 333])
def test_block_hashes_equal_vllms(seed: str | None, algo: str, length: int) -> None:
    tokens = _tokens(length, seed=length)
    expected = _vllm_hashes(algo, tokens, 16)
    hasher = BlockHasher(16, algo=algo, pythonhashseed=seed)
    assert hasher.none_hash == kv_utils.NONE_HASH
    assert hasher.raw_hashes(tokens) == expected
    assert len(expected) == length // 16


@pytest.mark.parametrize("seed", [None], indirect=True)
def test_lora_and_cache_salt_keys_equal_vllms(seed: None) -> None:
    tokens = _tokens(100, seed=7)
    lora = LoraKey("zubrowka", "/adapters/zubrowka")
    hasher = BlockHasher(32)
    for kwargs in ({"lora": lora}, {"salt": "tenant-a"}, {"lora": lora, "salt": "tenant-a"}):
        ours = hasher.raw_hashes(tokens, lora=kwargs.get("lora"), cache_salt=kwargs.get("salt"))
        assert ours == _vllm_hashes("sha256", tokens, 32, **kwargs)
        assert ours != hasher.raw_hashes(tokens)  # the keys really change the hashes
    salted = hasher.raw_hashes(tokens, cache_salt="tenant-a")
    assert salted[1:] != hasher.raw_hashes(tokens)[1:]  # the salt reaches later blocks via the chain


@pytest.mark.parametrize("seed", [None], indirect=True)
def test_coarser_block_size_takes_the_hash_at_each_block_end(seed: None) -> None:
    tokens = _tokens(200, seed=3)
    units = _vllm_hashes("sha256", tokens, 16)
    view = kv_utils.BlockHashListWithBlockSize(units, 16, 64)
    hasher = BlockHasher(64, hash_block_size=16)
    assert hasher.raw_hashes(tokens) == [view[i] for i in range(len(view))]
    assert len(hasher.raw_hashes(tokens)) == 3


def test_keys_are_the_low_64_bits_vllm_publishes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES", "1")
    hasher = BlockHasher(16)
    raw = hasher.raw_hashes(_tokens(48))
    assert hasher.block_keys(_tokens(48)) == [kv_utils.maybe_convert_block_hash(h) for h in raw]
    assert external_hash(raw[0]) == external_hash(kv_utils.maybe_convert_block_hash(raw[0]))


def test_hash_functions_equal_vllms() -> None:
    obj = (b"parent", (1, 2, 3), (("lora", "a", "/a"),))
    for algo in ("sha256", "sha256_cbor"):
        assert hash_function(algo)(obj) == vllm_hashing.get_hash_fn_by_name(algo)(obj)


def test_prefixes_share_leading_keys_only() -> None:
    hasher = BlockHasher(16)
    base = _tokens(64, seed=1)
    other = base[:40] + _tokens(24, seed=2)
    assert hasher.block_keys(base)[:2] == hasher.block_keys(other)[:2]
    assert hasher.block_keys(base)[2:] != hasher.block_keys(other)[2:]


def test_xxhash_without_a_seed_is_refused() -> None:
    with pytest.raises(ConfigError, match="PYTHONHASHSEED"):
        BlockHasher(16, algo="xxhash")


def test_bad_sizes_and_algorithms_are_refused() -> None:
    with pytest.raises(ConfigError, match="multiple"):
        BlockHasher(48, hash_block_size=32)
    with pytest.raises(ConfigError, match="prefix_caching_hash_algo"):
        BlockHasher(16, algo="md5")  # type: ignore[arg-type]
