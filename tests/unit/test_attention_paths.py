"""engine.checks.attention_paths: the predicted vLLM-CPU attention path, alone and against vLLM's own choice."""

from __future__ import annotations

import platform
from types import SimpleNamespace

import pytest

from engine.checks.attention_paths import (
    CPU_BLOCK_SIZE,
    PathStatus,
    engine_dtype,
    head_size,
    is_mla,
    plain_rope,
    predict_cpu_attention,
)
from engine.launch.cpu import CpuFeatures, CpuKernels
from engine.patches.cpu_kernels import hide_amx

PORTABLE, VLLM = CpuKernels.PORTABLE, CpuKernels.VLLM
AVX512 = CpuFeatures("x86_64", avx512f=True, avx512_bf16=True, avx2=True)
AMX = CpuFeatures("x86_64", amx_bf16=True, amx_tile=True, avx512f=True, avx512_bf16=True, avx2=True)
ARM = CpuFeatures("aarch64")


@pytest.mark.parametrize(
    ("features", "policy", "dtype", "size", "isa", "status"),
    [
        (AVX512, PORTABLE, "bfloat16", 64, "vec", PathStatus.OK),
        (AVX512, VLLM, "bfloat16", 64, "vec", PathStatus.OK),
        (AMX, PORTABLE, "bfloat16", 64, "vec", PathStatus.OK),
        (AMX, VLLM, "bfloat16", 64, "amx", PathStatus.KNOWN_WRONG),
        (AMX, VLLM, "float16", 64, "vec", PathStatus.OK),  # vLLM's AMX attention is bf16 only
        (AMX, VLLM, "bfloat16", 80, "vec16", PathStatus.OK),  # 80 % 32 != 0: before the AMX test
        (AMX, VLLM, "bfloat16", 72, "amx", PathStatus.KNOWN_WRONG),  # 72 % 16 != 0 either
        (ARM, VLLM, "bfloat16", 64, "neon", PathStatus.UNVERIFIED),
        (CpuFeatures("ppc64le"), PORTABLE, "bfloat16", 128, "vsx", PathStatus.UNVERIFIED),
    ],
)
def test_cpu_attn_isa(features, policy, dtype, size, isa, status) -> None:
    path = predict_cpu_attention(features, policy, dtype=dtype, head_size=size)
    assert (path.backend, path.isa, path.status) == ("CPU_ATTN", isa, status)


def test_the_amx_path_says_what_to_do() -> None:
    path = predict_cpu_attention(AMX, VLLM, dtype="bfloat16", head_size=64)
    assert path.describe() == "CPU_ATTN amx (known wrong)"
    assert "portable" in path.note


@pytest.mark.parametrize(
    ("features", "policy", "rope", "requested", "backend", "status"),
    [
        (AMX, VLLM, False, None, "AMX_MLA", PathStatus.UNVERIFIED),
        (AMX, VLLM, True, None, "AMX_MLA", PathStatus.UNVERIFIED),
        (AMX, PORTABLE, True, None, "CPU_MLA", PathStatus.OK),
        (AMX, VLLM, False, "CPU_MLA", "CPU_MLA", PathStatus.OK),
        (AVX512, VLLM, True, None, "CPU_MLA", PathStatus.KNOWN_WRONG),  # the unmended rotary op
        (AVX512, VLLM, False, None, "CPU_MLA", PathStatus.OK),  # yarn: another rotary class
        (AVX512, PORTABLE, True, None, "CPU_MLA", PathStatus.OK),
    ],
)
def test_mla_backend(features, policy, rope, requested, backend, status) -> None:
    path = predict_cpu_attention(
        features, policy, dtype="bfloat16", head_size=None, mla=True, plain_rope=rope,
        requested_backend=requested,
    )
    assert (path.backend, path.isa, path.status) == (backend, None, status)


def test_config_helpers() -> None:
    deepseek = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
                "rope_parameters": {"rope_type": "default"}}
    assert is_mla(deepseek) and plain_rope(deepseek)
    assert not plain_rope({"rope_scaling": {"type": "yarn", "factor": 40}})
    assert not is_mla({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"})  # R1 distill
    assert head_size({"head_dim": 64, "hidden_size": 576, "num_attention_heads": 9}) == 64
    assert head_size({"hidden_size": 384, "num_attention_heads": 12}) == 32
    assert head_size({}) is None


@pytest.mark.parametrize(
    ("setting", "checkpoint", "pooling", "expected"),
    [
        ("auto", "bfloat16", False, "bfloat16"),
        ("auto", "float32", False, "bfloat16"),
        ("auto", "float32", True, "float16"),
        ("auto", None, True, "float16"),
        ("float32", "bfloat16", False, "float32"),
    ],
)
def test_engine_dtype(setting, checkpoint, pooling, expected) -> None:
    assert engine_dtype(setting, checkpoint, pooling=pooling) == expected


# --- against vLLM's own selection, with torch's AMX answer patched either way -----------------


@pytest.fixture
def torch_amx(monkeypatch: pytest.MonkeyPatch):
    """Set what torch says about AMX; monkeypatch restores torch.cpu (also after hide_amx)."""
    torch = pytest.importorskip("torch")

    def set_amx(present: bool, policy: CpuKernels) -> CpuFeatures:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: present)
        monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: present)
        if policy is PORTABLE:
            assert hide_amx() is present
        return CpuFeatures(platform.machine(), amx_bf16=present, amx_tile=present,
                           avx512f=AVX512.avx512f, avx2=True)

    return set_amx


@pytest.mark.parametrize("present", [True, False], ids=["amx", "no-amx"])
@pytest.mark.parametrize("policy", [PORTABLE, VLLM], ids=lambda p: p.value)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("size", [32, 64, 80, 128])
def test_isa_matches_vllm(torch_amx, present, policy, dtype, size) -> None:
    import torch
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    features = torch_amx(present, policy)
    vllm_isa = _get_attn_isa(getattr(torch, dtype), CPU_BLOCK_SIZE, size)
    assert predict_cpu_attention(features, policy, dtype=dtype, head_size=size).isa == vllm_isa


@pytest.mark.parametrize("present", [True, False], ids=["amx", "no-amx"])
@pytest.mark.parametrize("policy", [PORTABLE, VLLM], ids=lambda p: p.value)
@pytest.mark.parametrize("requested", [None, "CPU_MLA"])
def test_mla_backend_matches_vllm(torch_amx, present, policy, requested) -> None:
    from vllm.platforms.cpu import CpuPlatform
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    features = torch_amx(present, policy)
    selected = AttentionBackendEnum[requested] if requested else None
    chosen = CpuPlatform.get_attn_backend_cls(selected, SimpleNamespace(use_mla=True, use_sparse=False))
    predicted = predict_cpu_attention(
        features, policy, dtype="bfloat16", head_size=None, mla=True, requested_backend=requested
    )
    assert chosen == AttentionBackendEnum[predicted.backend].get_path()


def test_torch_is_restored_after_the_patches() -> None:
    torch = pytest.importorskip("torch")
    assert torch.cpu._is_amx_tile_supported.__module__.startswith("torch")
