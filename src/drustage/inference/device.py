"""Where the networks run: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``,
and the mixed precision used on CUDA (bfloat16 where the GPU has it, else float16) and, for
training only, on CPUs that compute bfloat16 natively."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used, so the CLI's parser (which names the choices) stays light
    import torch

__all__ = ["DEFAULT_DEVICE", "autocast_dtype", "cpu_computes_bfloat16", "grad_scaler", "mixed_precision",
           "resolve_device"]

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
DEFAULT_DEVICE = "auto"


def resolve_device(name: str | torch.device = DEFAULT_DEVICE) -> torch.device:
    """The ``torch.device`` a name asks for; a one-line ``ValueError`` when it cannot be used here."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {name!r}: expected {DEVICE_CHOICES}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: expected {DEVICE_CHOICES}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available on this machine (use cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def cpu_computes_bfloat16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX-512 BF16 or AMX), where oneDNN trains the
    networks about twice as fast in bfloat16 as in float32 (bench/bench_training_precision.py);
    elsewhere bfloat16 is emulated, slower than float32."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def autocast_dtype(device: torch.device, on_cpu: bool = False) -> torch.dtype | None:
    """The reduced precision autocast uses on ``device``: on CUDA bfloat16 where the GPU has it,
    else float16; on a CPU bfloat16 when ``on_cpu`` asks for it (training) and the CPU computes it
    natively; otherwise None (full precision)."""
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if on_cpu and cpu_computes_bfloat16() else None


def mixed_precision(device: torch.device, on_cpu: bool = False) -> contextlib.AbstractContextManager:
    """Autocast on CUDA, and on a CPU with native bfloat16 when ``on_cpu`` asks for it; nothing
    otherwise, so CPU readings stay exactly those of full precision."""
    import torch

    dtype = autocast_dtype(device, on_cpu)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, active only where autocast runs in float16 (bfloat16 needs none)."""
    import torch

    return torch.amp.GradScaler("cuda", enabled=autocast_dtype(device) == torch.float16)
