"""One pass over the data in all under `accelerate launch`, not one per rank.

Work that every rank needs in full (a frozen backbone's features, a teacher's logits) is split row by row: each
rank computes every world_size-th row, and every rank gets all rows back, in order.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def rows_across_ranks(
    compute: Callable[[Sequence[int]], tuple[torch.Tensor, ...]], length: int
) -> tuple[torch.Tensor, ...]:
    """`compute(rows)` returns tensors whose first dimension follows `rows`; here the same tensors for all `length` rows."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tuple(compute(range(length)))
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = tuple(tensor.cpu() for tensor in compute(range(rank, length, world)))
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    whole = tuple(torch.empty((length, *part.shape[1:]), dtype=part.dtype) for part in gathered[0])
    for r, parts in enumerate(gathered):
        for tensor, part in zip(whole, parts):
            tensor[r::world] = part
    return whole
