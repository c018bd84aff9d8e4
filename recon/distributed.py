"""Data-parallel ranks for recon commands: the torchrun world, its process group, rank-0 decisions, local launch.

A command runs as one process or one of N ranks (``torchrun``, or :func:`launch_local` for
``--workers N``); a lost peer becomes :class:`PeerLost`, reported in one line. Rank 0 alone writes;
its decisions reach the others through :meth:`World.rank0_decides`, and independent items are split with
:func:`my_share` and collected with :func:`gather_on_rank0`. The environment and backends:
docs/design.md 7; how ranks work together: docs/architecture.md, "Offline training and data-parallel ranks".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from tiltstream.errors import UserError

DEFAULT_TIMEOUT_S = 120.0  # collectives (and the rendezvous) that wait longer than this fail


class PeerLost(Exception):
    """Another rank died or stopped answering; this rank cannot go on."""


@dataclass
class World:
    """This process's place among the ranks: ``rank`` of ``size``, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        """True when there is more than one rank."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that writes files and progress."""
        return self.rank == 0

    def rank0_decides(self, value: int) -> int:
        """Rank 0's ``value`` on every rank (a broadcast; ``value`` itself in a single process)."""
        if not self.distributed:
            return int(value)
        tensor = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        with peer_failures(self):
            dist.broadcast(tensor, src=0)
        return int(tensor.item())

    def barrier(self) -> None:
        """Wait until every rank gets here (a no-op in a single process)."""
        if self.distributed:
            with peer_failures(self):
                dist.barrier()


def world_from_env() -> World:
    """The world torchrun describes in the environment; a single rank when ``WORLD_SIZE`` is not set.

    Raises
    ------
    UserError
        Malformed rank variables.
    """
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers (as torchrun "
                        "sets them)") from None
    if not (size >= 1 and 0 <= rank < size and 0 <= local_rank < max(local_size, 1)):
        raise UserError(f"RANK={rank} of WORLD_SIZE={size} (LOCAL_RANK={local_rank}) is not a valid rank")
    return World(rank=rank, size=size, local_rank=local_rank, local_size=max(local_size, 1))


def start(world: World, device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> World:
    """Join the process group (NCCL on CUDA, gloo on the CPU) and pick this rank's device.

    Parameters
    ----------
    world
        From :func:`world_from_env`; a single rank is returned unchanged (device set) without a group.
    device
        The resolved device kind; on CUDA each local rank takes GPU ``local_rank``.
    timeout_s
        Longest wait of a collective, seconds, before it fails (a dead or hung peer).

    Returns
    -------
    World
        ``world`` with its ``device``.
    """
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    world.device = device
    if not world.distributed:
        return world
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=dt.timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"rank {world.rank}: cannot join the {backend} process group "
                        f"({_first_line(exc)}); run under torchrun or give --workers N") from None
    return world


def stop(world: World) -> None:
    """Leave the process group together: wait for every rank (rank 0 may still be writing), then destroy it.

    A rank that tears gloo down while a peer still holds the connection can abort in gloo's threads
    ("terminate called without an active exception", seen once in a fresh CI run), hence the barrier.
    A peer already gone at this point changes nothing: the work is done, so its loss is ignored here.
    """
    if world.distributed and dist.is_initialized():
        try:
            world.barrier()
        except PeerLost:
            pass
        dist.destroy_process_group()


@contextlib.contextmanager
def peer_failures(world: World) -> Iterator[None]:
    """Turn a collective's failure (a peer that died or timed out) into :class:`PeerLost`."""
    try:
        yield
    except RuntimeError as exc:  # dist.DistError and gloo/NCCL errors are RuntimeErrors
        if not world.distributed:
            raise
        raise PeerLost(f"rank {world.rank}: another rank stopped or stopped answering "
                       f"({_first_line(exc)})") from None


def my_share(world: World, count: int) -> list[int]:
    """The positions ``0..count-1`` this rank works on: every ``size``-th from ``rank`` (all of them in a
    single process)."""
    return list(range(world.rank, int(count), world.size))


def gather_on_rank0(world: World, results: dict[int, Any]) -> dict[int, Any]:
    """Every rank's ``{position: result}`` merged on rank 0 (an empty dict on the other ranks).

    Results travel pickled (``gather_object``), so keep them to arrays and numbers.
    """
    if not world.distributed:
        return dict(results)
    gathered: list[dict[int, Any]] | None = [{} for _ in range(world.size)] if world.is_main else None
    with peer_failures(world):
        dist.gather_object(results, gathered, dst=0)
    merged: dict[int, Any] = {}
    for part in gathered or []:
        merged.update(part)
    return merged


def split_across_ranks(world: World, count: int, compute: Callable[[int], Any],
                       report: Callable[[int, int], None] | None = None) -> list[Any] | None:
    """``compute(k)`` for this rank's share of ``k = 0..count-1``, every result collected on rank 0.

    Parameters
    ----------
    world
        This process's place in the world (a single process computes everything).
    count
        How many positions there are.
    compute
        The work for one position (e.g. one time point's volume, one SIRT window).
    report
        ``report(done, total)`` after each of this rank's positions (progress), or None.

    Returns
    -------
    list or None
        On rank 0 the ``count`` results in position order; None on the other ranks, which have left the
        process group.

    Raises
    ------
    PeerLost
        Another rank stopped or stopped answering before the results were collected.
    """
    mine = my_share(world, count)
    computed: dict[int, Any] = {}
    for k in mine:
        computed[k] = compute(k)
        if report is not None:
            report(len(computed), len(mine))
    computed = gather_on_rank0(world, computed)
    stop(world)
    if not world.is_main:
        return None
    return [computed[k] for k in range(int(count))]


def _first_line(exc: BaseException) -> str:
    """The exception's first sentence (gloo appends advice and an emoji), at most 200 characters."""
    lines = str(exc).strip().splitlines()
    first = lines[0].split(". This is")[0] if lines else ""
    return f"{type(exc).__name__}: {first}"[:200]


def launch_local(workers: int, argv: Sequence[str], prog: str) -> int:
    """Run ``python argv...`` as ``workers`` local ranks (torch.distributed.launcher, as ``torchrun
    --standalone --nproc-per-node workers``) and wait for them.

    Returns
    -------
    int
        0 when every rank succeeded; 1 after one line naming the first rank that failed.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # we say it in one line
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=int(workers), run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0,
                          monitor_interval=0.5)
    try:
        elastic_launch(config, sys.executable)(*argv)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        print(f"{prog}: {len(exc.failures)} of {workers} ranks failed (first: rank {rank}, exit code "
              f"{failure.exitcode}); the run directory keeps its last checkpoint", file=sys.stderr)
        return 1
    return 0
