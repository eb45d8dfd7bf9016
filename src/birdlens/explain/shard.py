"""Shard ``explain`` and ``explain-eval`` over processes with Lightning Fabric (``--devices N``, ``--num-nodes``).

The work is cut into *units*, whole batches (explain's ``batch_images`` groups, explain-eval's aligned image
blocks); unit ``u`` goes to rank ``u % world_size``. Each image is so computed in exactly the batch it has in
one process, and the merged result equals a one-process run. Every rank writes one part file per unit (per
image for explain) atomically under ``OUT/.parts``; after a collective that doubles as the barrier, rank 0
merges them, writes the outputs and removes the parts. ``resume`` keeps the complete parts of an interrupted
run and computes only the missing units.

Fabric's ``ddp`` launcher re-runs the running command once per extra local process (as ``birdlens train
--devices`` does), so a sharded run must be started from a command line (``birdlens ...``, ``python -m``), or
under ``torchrun`` / SLURM, which start every process themselves. One process (the default) never starts
Fabric: today's path, unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from birdlens.utils.atomic import write_json

__all__ = [
    "PARTS_DIR",
    "PartStore",
    "Processes",
    "ShardError",
    "check_processes",
    "is_main_process",
    "run_sharded",
    "units_for_rank",
]

PARTS_DIR = ".parts"  # hidden: globs of the output folder skip it like a temp file
DEVICES_HELP = "Processes to shard the images over (Lightning Fabric, ddp; one per GPU, or CPU processes)."
NUM_NODES_HELP = "Machines (needs torchrun, SLURM or MASTER_ADDR+NODE_RANK to start them)."
RESUME_HELP = "Keep the complete per-image parts of an interrupted run in OUT/.parts; compute the rest."
T = TypeVar("T")
_RANK = {"global": 0}  # the rank of the last sharded run in this process (0 when none ran)


class ShardError(ValueError):
    """A ``--devices`` / ``--num-nodes`` / ``--resume`` that this machine or output folder cannot honour."""


@dataclass(frozen=True)
class Processes:
    """How many processes a run uses: ``devices`` per node times ``num_nodes``, on ``accelerator``."""

    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "cpu"

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def sharded(self) -> bool:
        return self.world_size > 1


def _launcher_env() -> bool:
    """Whether something outside this process starts the ranks (torchrun, SLURM, LSF, MPI or by hand)."""
    from lightning.fabric.plugins.environments import (
        LSFEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    by_hand = "MASTER_ADDR" in os.environ and "NODE_RANK" in os.environ
    return by_hand or any(env.detect() for env in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment))


def check_processes(devices: int, num_nodes: int, device: Any) -> Processes:
    """``devices`` x ``num_nodes`` checked against this machine and ``device`` (the resolved ``--device``), or
    :class:`ShardError` in one sentence naming the option and what is allowed; nothing is started."""
    import torch

    if devices < 1:
        raise ShardError(f"--devices {devices}: must be at least 1")
    if num_nodes < 1:
        raise ShardError(f"--num-nodes {num_nodes}: must be at least 1")
    kind = torch.device(device).type
    if devices * num_nodes > 1 and kind not in ("cpu", "cuda"):
        raise ShardError(f"--devices/--num-nodes shard over CPU processes or CUDA GPUs, not {kind}")
    if kind == "cuda" and devices > 1 and torch.device(device).index is not None:
        raise ShardError(f"--devices {devices} with --device {device}: pass --device cuda to use GPUs 0..N-1")
    have = torch.cuda.device_count() if kind == "cuda" else (os.cpu_count() or 1)
    if devices > have:
        what = "CUDA GPUs" if kind == "cuda" else "CPU cores"
        raise ShardError(f"--devices {devices}: this machine has {have} {what}; choose 1..{have}")
    if num_nodes > 1 and not _launcher_env():
        raise ShardError(
            f"--num-nodes {num_nodes}: start the command on every node with torchrun or SLURM "
            "(or set MASTER_ADDR and NODE_RANK)"
        )
    if devices * num_nodes > 1 and not _launcher_env() and not _relaunchable():
        raise ShardError("--devices > 1 re-runs the command per process: start it from a command line")
    return Processes(devices, num_nodes, "cuda" if kind == "cuda" else "cpu")


def _relaunchable() -> bool:
    """Whether Fabric's launcher can re-run this process's command (not ``python -c``, a notebook or pytest)."""
    import __main__

    argv0 = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    spec = getattr(__main__, "__spec__", None)
    has_file = spec is not None or bool(getattr(__main__, "__file__", None))
    module = getattr(spec, "name", "") or ""  # `python -m pytest` runs pytest.__main__ (argv0 is __main__.py)
    test_runner = "pytest" in argv0 or module.split(".")[0] == "pytest"
    return has_file and argv0 not in ("-c", "") and not test_runner


def units_for_rank(n_units: int, rank: int, world_size: int) -> list[int]:
    """The units of ``rank``: a fixed round-robin assignment, the same in every process and on every resume."""
    return list(range(rank, n_units, world_size))


def is_main_process() -> bool:
    """Whether this process is rank 0 of the last sharded run (or ran none): the one that reports."""
    return _RANK["global"] == 0


class PartStore:
    """The part files of one run: ``OUT/.parts/<name>.json`` plus ``run.json``, the options they were made with
    (a resume with other options is refused: its parts would mix two runs)."""

    def __init__(self, out: str | os.PathLike[str], key: dict[str, Any]) -> None:
        self.dir = Path(out) / PARTS_DIR
        self.key = json.loads(json.dumps(key, default=str))  # as it reads back from run.json

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def check(self, resume: bool) -> None:
        """Refuse a resume whose parts were made with other options (read only: every rank may call it)."""
        run = self.dir / "run.json"
        if not resume or not run.is_file():
            return
        try:
            made = json.loads(run.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            made = None
        if made != self.key:
            raise ShardError(f"--resume: the parts in {self.dir} were made with other options; drop --resume")

    def start(self, resume: bool) -> None:
        """Rank 0, before any rank writes: a fresh run drops old parts; ``run.json`` records the options."""
        if not resume and self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / "run.json", self.key)

    def load(self, name: str) -> dict[str, Any] | None:
        """A part, or None when it is missing or unreadable (then its unit is computed again)."""
        try:
            return json.loads(self.path(name).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def save(self, name: str, part: dict[str, Any]) -> None:
        write_json(self.path(name), part)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Rank:
    """What a unit of work needs to know about its process."""

    rank: int
    world_size: int
    device: Any = None  # this rank's torch device under Fabric (None: leave the model where it is)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def units(self, n_units: int, hint: str = "") -> Iterator[int]:
        """This rank's units; rank 0 says when there are fewer units than processes (some would idle)."""
        if self.main and n_units < self.world_size:
            from birdlens.utils import console

            console.note(f"{n_units} unit(s) of work for {self.world_size} processes: some stay idle. {hint}")
        yield from units_for_rank(n_units, self.rank, self.world_size)


def run_sharded(
    procs: Processes,
    store: PartStore,
    resume: bool,
    work: Callable[[Rank], None],
    merge: Callable[[], T],
    reload: Callable[[], T],
) -> T:
    """``work`` on every rank, then ``merge`` on rank 0 (its result) while the others wait and ``reload`` it.

    One process: no Fabric, ``work`` then ``merge`` here. Several: Fabric ``ddp`` (gloo on the CPU, NCCL on
    GPUs), one torch thread per rank on the CPU (N ranks share the cores), and a failure on any rank fails
    every rank with its message instead of leaving the others waiting at the barrier.
    """
    store.check(resume)
    if not procs.sharded:
        store.start(resume)
        work(Rank(0, 1))
        return merge()
    from lightning.fabric import Fabric

    for name in ("lightning.fabric", "lightning.pytorch"):  # their banners say nothing to a birdlens user
        logging.getLogger(name).setLevel(logging.WARNING)
    fabric = Fabric(
        accelerator=procs.accelerator, devices=procs.devices, num_nodes=procs.num_nodes, strategy="ddp"
    )
    return fabric.launch(lambda f: _on_rank(f, procs, store, resume, work, merge, reload))


def _on_rank(
    fabric: Any,
    procs: Processes,
    store: PartStore,
    resume: bool,
    work: Callable[[Rank], None],
    merge: Callable[[], T],
    reload: Callable[[], T],
) -> T:
    """One rank's share: set up (rank 0), barrier, work, all-reduce of failures, merge (rank 0), barrier."""
    import torch

    if procs.accelerator == "cpu":
        torch.set_num_threads(1)
    _RANK["global"] = fabric.global_rank
    me = Rank(fabric.global_rank, fabric.world_size, fabric.device if procs.accelerator == "cuda" else None)
    _collective(fabric, lambda: store.start(resume) if me.main else None, "preparing the parts")
    _collective(fabric, lambda: work(me), "its share")
    result: list[T] = []
    _collective(fabric, lambda: result.append(merge()) if me.main else None, "merging the parts")
    return result[0] if me.main else reload()


def _collective(fabric: Any, step: Callable[[], Any], what: str) -> None:
    """Run ``step`` on this rank, then agree with every rank on whether all succeeded (a barrier that cannot
    hang on a rank that failed before it)."""
    import torch

    error: BaseException | None = None
    try:
        step()
    except Exception as e:
        error = e
        if fabric.global_rank != 0:  # rank 0's own error is the command's error line; the others say theirs
            print(f"process {fabric.global_rank}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    flag = torch.tensor([0.0 if error is None else 1.0], device=fabric.device)
    failed = int(fabric.all_reduce(flag, reduce_op="sum").item())
    if error is not None:
        raise error
    if failed:
        raise ShardError(f"{failed} other process(es) failed while doing {what}; see their messages above")
