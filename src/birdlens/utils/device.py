"""``--device`` and ``--precision``: one resolver every command uses, with one clear error for a user mistake.

A device spec is ``auto`` (CUDA when present, else the CPU: MPS lacks float64, which LIME's segment means need,
so it is never picked silently), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. A precision is ``fp32`` (no autocast:
results bit-identical to a run without the option), ``bf16`` or ``fp16`` (autocast of the forward passes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when a device is resolved: the CLI's --help stays fast
    import torch

__all__ = [
    "DEVICE_HELP",
    "PRECISIONS",
    "PRECISION_HELP",
    "DeviceError",
    "autocast",
    "available_devices",
    "resolve_device",
    "resolve_for_cli",
    "resolve_precision",
    "supported_precisions",
]

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps (auto: CUDA when present, else the CPU)"
PRECISION_HELP = "fp32 | bf16 | fp16: autocast for the forward passes of perturbation methods and metrics"


class DeviceError(ValueError):
    """A device that this machine does not have, or a precision that the device does not support."""


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """The device specs this machine can run: ``cpu``, then ``cuda:0``... and ``mps`` when present."""
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    return out


def _unavailable(spec: str) -> DeviceError:
    return DeviceError(f"--device {spec}: not on this machine; available: {', '.join(available_devices())}")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` for ``spec``, or :class:`DeviceError` naming what was asked and what is available."""
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    s = (spec or "auto").strip().lower()
    if s == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "mps":
        if not _mps_available():
            raise _unavailable(s)
        return torch.device("mps")
    kind, _, index = s.partition(":")
    if kind in ("cuda", "gpu") and (not index or index.isdigit()):
        if not torch.cuda.is_available():
            raise _unavailable(s)
        if index and int(index) >= torch.cuda.device_count():
            raise _unavailable(s)
        return torch.device(f"cuda:{index}" if index else "cuda")
    raise DeviceError(f"--device {spec}: unknown device; choose one of {DEVICE_HELP}")


def supported_precisions(device: torch.device) -> tuple[str, ...]:
    """Precisions autocast offers on ``device``: fp16 needs a GPU (the CPU's fp16 kernels are emulated and
    slower than fp32), bf16 on CUDA needs a GPU with bf16 support."""
    import torch

    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return ("fp32", "bf16", "fp16") if bf16 else ("fp32", "fp16")
    if device.type == "mps":
        return ("fp32", "fp16")
    return ("fp32", "bf16")


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """``precision`` checked against ``device`` (``None``: fp32), or :class:`DeviceError` naming what is available."""
    p = (precision or "fp32").strip().lower()
    if p not in PRECISIONS:
        raise DeviceError(
            f"--precision {precision}: unknown precision; choose one of {', '.join(PRECISIONS)}"
        )
    ok = supported_precisions(device)
    if p not in ok:
        raise DeviceError(f"--precision {p} is not supported on {device}; available there: {', '.join(ok)}")
    return p


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """Autocast to ``precision`` on ``device``'s type; ``fp32`` enters nothing, so fp32 stays bit-identical."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        yield
        return
    device_type = torch.device(device).type
    with torch.autocast(device_type=device_type, dtype=dtype):
        yield


def resolve_for_cli(device: str | None, precision: str | None = None) -> tuple[torch.device, str]:
    """:func:`resolve_device` and :func:`resolve_precision` for a command: a mistake prints one ``error:`` line
    and exits with code 2 before anything is loaded or written."""
    try:
        dev = resolve_device(device)
        return dev, resolve_precision(precision, dev)
    except DeviceError as e:
        import typer

        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
