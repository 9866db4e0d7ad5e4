"""Which device and which dtype a model runs on: ``"auto"`` and user spellings resolved to torch objects.

>>> resolve_device("cpu"), resolve_dtype("auto", "cpu")
(device(type='cpu'), torch.float32)
"""
from __future__ import annotations

import difflib
from typing import Union

import torch

__all__ = ["resolve_device", "resolve_dtype"]

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` if available else ``cpu``; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` as given.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device {device!r} is not a torch device, expected auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for CUDA but torch {torch.__version__} sees no GPU "
                         "(torch.cuda.is_available() is False); use --device cpu or --device auto")
    return resolved


def resolve_dtype(dtype: Union[str, torch.dtype] = "auto", device: Union[str, torch.device] = "cpu") -> torch.dtype:
    """``"auto"`` → float32 on CPU; bfloat16 on a CUDA GPU that supports it, else float16.

    >>> resolve_dtype("auto", "cpu"), resolve_dtype("bf16")
    (torch.float32, torch.bfloat16)
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        device = torch.device(device)
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        close = difflib.get_close_matches(str(dtype), list(_DTYPES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"dtype {dtype!r} is not known{hint} Expected auto, float32, float16 or bfloat16")
    return _DTYPES[dtype]
