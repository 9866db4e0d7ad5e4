"""Left padding: token rows of different lengths into one (B, T) batch whose last column is every row's last token.

Decoder-only models read a batch left-padded, so that position ``-1`` is each item's last real
token and generation continues every row from there; the attention mask hides the padding.

>>> ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
>>> ids.tolist(), mask.tolist()
([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

__all__ = ["left_pad"]


def left_pad(rows: Sequence[Union[Sequence[int], torch.Tensor]], pad_id: int,
             device: Union[str, torch.device, None] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)``, both (B, T) long on ``device``: each row right-aligned, ``pad_id`` and mask 0 before it.

    A row is a list of token ids or a 1-D tensor (copied as it is; a tensor on another device than
    ``device`` is moved by the assignment). T is the longest row's length.
    """
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)  # (B, T)
    mask = torch.zeros_like(ids)  # (B, T)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = row if isinstance(row, torch.Tensor) else torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids, mask

