"""Several training processes under `torchrun` / `accelerate launch`: who am I, and the few collectives distill needs.

The launcher starts one process per GPU (or per CPU share) and tells each its place through the
environment variables both launchers set: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
`MASTER_ADDR` and `MASTER_PORT`. Without them this is one process of a world of one: nothing is
initialised, nothing imports torch.distributed, and every helper here is free.

The process group is started on first use (gloo on CPU, nccl on CUDA) and closed at exit. Only the
main process (rank 0) writes: the student folder, reports, records and the pair store; the others
wait at a barrier and get rank 0's results by broadcast.
"""

from __future__ import annotations

import atexit
import os
from typing import Any, TypeVar

T = TypeVar("T")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    """Processes on this machine (to share its CPU threads between them)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size())))


def is_main() -> bool:
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def device() -> Any:
    """This process's device: its own GPU (`cuda:LOCAL_RANK`) when CUDA is there, else the CPU."""
    import torch

    if torch.cuda.is_available():
        index = local_rank() % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def setup() -> None:
    """Join the process group the launcher described (idempotent; nothing to do in a world of one)."""
    if not is_distributed():
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    from .errors import InputError

    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise InputError(
            f"WORLD_SIZE={world_size()} but {', '.join(missing)} is not set: start the processes with"
            " `torchrun` or `accelerate launch` (docs/scale.md), or unset WORLD_SIZE"
        )
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        kwargs["device_id"] = device()
    dist.init_process_group(backend, rank=rank(), world_size=world_size(), **kwargs)
    atexit.register(_teardown)


def _teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process is here (for the others to see what rank 0 wrote)."""
    if not is_distributed():
        return
    import torch.distributed as dist

    setup()
    dist.barrier()


def broadcast(value: T | None) -> T:
    """Rank 0's `value` on every rank (any picklable object but None: the other ranks may pass None)."""
    if is_distributed():
        import torch.distributed as dist

        setup()
        box = [value]
        dist.broadcast_object_list(box, src=0)
        value = box[0]
    if value is None:
        raise ValueError("broadcast: rank 0 had no value to send")
    return value


def all_sum(value: float) -> float:
    """The sum of `value` over all ranks."""
    if not is_distributed():
        return value
    import torch
    import torch.distributed as dist

    setup()
    t = torch.tensor([value], dtype=torch.float64, device=device() if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t.item())


def shard(batch: list[int], rank_: int | None = None, world: int | None = None) -> list[int]:
    """This rank's disjoint share of one batch: every `world`-th item from position `rank`.

    Every rank builds the same batches in the same shuffled order (same seed) and takes its share of
    each, so one step of all ranks together sees exactly the batch one process would: the effective
    batch is `training.batch_size` whatever the world size, and the gradient (a mean over the whole
    batch, see distill.py) is the one-process gradient. A share is empty when the batch has fewer
    items than ranks; the caller must still take part in the step (DDP synchronises every backward).
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    return batch[r::w]
