"""Several processes on one job, as torchrun, ``accelerate launch`` and SLURM's srun start them.

A launcher sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :class:`Dist` reads them, initialises
torch.distributed (NCCL on GPUs, gloo on the CPU), puts each rank on ``cuda:LOCAL_RANK``, and refuses to run when
the launcher says several processes but the initialised world is one. Work is split from a to-do list every rank
computes the same way, round-robin, so a rerun with another number of processes does only what is left. Without
a launcher everything here is a no-op for one process.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Sequence

from .errors import ConfigError


JOIN_TIMEOUT_ENV = "DATE_EDIT_JOIN_TIMEOUT"  # seconds the ranks wait for each other at the start (default 900)
PEER_TIMEOUT_ENV = "DATE_EDIT_PEER_TIMEOUT"  # seconds a rank's heartbeat may stop before the others give up (60)
STEP_TIMEOUT = timedelta(hours=2)  # the longest one collective or store call of a running job may wait
MAX_WAIT_S = 7 * 24 * 3600.0  # the longest a timeout read from the environment may be


def _join_timeout() -> timedelta:
    """How long the ranks wait for each other to start: ``$DATE_EDIT_JOIN_TIMEOUT`` seconds, 900 by default."""
    return timedelta(seconds=_env_seconds(JOIN_TIMEOUT_ENV, 900.0))


def _peer_timeout() -> float:
    """How long a rank may go without a heartbeat before the others stop: ``$DATE_EDIT_PEER_TIMEOUT`` seconds, 60
    by default."""
    return _env_seconds(PEER_TIMEOUT_ENV, 60.0)


def _env_seconds(name: str, default: float) -> float:
    """``$name`` as a number of seconds (``default`` when unset): finite, above 0, at most a week."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_WAIT_S:  # also refuses nan and inf (timedelta cannot hold inf)
        raise ConfigError(None, f"{name}={raw!r}: give a number of seconds above 0 and at most {MAX_WAIT_S:.0f}")
    return seconds


def _env_int(names: Sequence[str], default: int) -> int:
    """The first of the environment variables ``names`` that is set, as an integer (``default``: none is)."""
    for name in names:
        raw = os.environ.get(name, "").strip()
        if raw:
            try:
                return int(raw)
            except ValueError:
                raise ConfigError(None, f"{name}={raw!r} is not a whole number: check what the launcher "
                                        "(torchrun, srun) or your script sets") from None
    return default


def master_port() -> int:
    """``$MASTER_PORT`` as a TCP port (1 to 65535); ConfigError in one line otherwise."""
    raw = os.environ.get("MASTER_PORT", "").strip()
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ConfigError(None, f"MASTER_PORT={raw!r} is not a TCP port: give a free port from 1 to 65535 "
                                "(e.g. 29500)")
    return port


def _wait_for_port(addr: str, port: int, join: timedelta) -> None:
    """Wait until something listens on ``addr:port`` (rank 0's store), at most ``join``."""
    import socket
    import time

    deadline = time.monotonic() + join.total_seconds()
    while True:
        try:
            with socket.create_connection((addr, port), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise ConfigError(None, f"nothing answers at MASTER_ADDR:MASTER_PORT {addr}:{port} after "
                                        f"{join.total_seconds():.0f} s ({e.strerror or e}): start rank 0 there, "
                                        f"or raise {JOIN_TIMEOUT_ENV}") from None
            time.sleep(0.5)


@dataclass
class Dist:
    """This process's place in the job.

    Attributes:
        rank / world / local_rank: from the launcher's environment (0 / 1 / 0 without one).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    _group: bool = False
    _coord: Any = None  # the gloo group of the coordination (None: the default group is gloo already)
    _store: Any = None  # the job's key-value store (this attempt's namespace); None for one process
    _counts: dict = field(default_factory=dict)  # one process: the counters of :meth:`add`

    @classmethod
    def from_env(cls) -> "Dist":
        """Read ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (SLURM's ``SLURM_NTASKS``/``SLURM_PROCID`` too).

        Raises:
            ConfigError: one line, for a value that is not a whole number, a rank outside the world, or (with
                several processes) a bad ``MASTER_PORT``, ``DATE_EDIT_JOIN_TIMEOUT`` or ``DATE_EDIT_PEER_TIMEOUT``.
        """
        world = _env_int(("WORLD_SIZE", "SLURM_NTASKS"), 1)
        rank = _env_int(("RANK", "SLURM_PROCID"), 0)
        local = _env_int(("LOCAL_RANK", "SLURM_LOCALID"), 0)
        if world < 1 or not 0 <= rank < world or local < 0:
            raise ConfigError(None, f"the launcher says rank {rank} (local {local}) of {world} processes: check "
                                    "WORLD_SIZE, RANK and LOCAL_RANK")
        if world > 1:  # what init will need, checked before anything loads
            _join_timeout()
            _peer_timeout()
            if os.environ.get("MASTER_PORT"):
                master_port()
        return cls(rank=rank, world=world, local_rank=local)

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that does the housekeeping and writes the reports."""
        return self.rank == 0

    def device(self, requested: str) -> str:
        """The device of this rank: ``cuda:LOCAL_RANK`` when several ranks share CUDA (modulo the GPUs this process
        sees: under ``srun --gpus-per-task 1`` each sees one), else ``requested``."""
        import torch

        if self.active and requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return requested

    def init(self, device: str) -> None:
        """Join the process group (NCCL for CUDA devices, gloo otherwise) plus a gloo group with a long timeout for
        the coordination (barriers, gathering small objects), whose store is namespaced per restart attempt
        (``TORCHELASTIC_RESTART_COUNT``) so that ``--max-restarts`` attempts never meet a stale one. One process:
        nothing to do. Needs ``MASTER_ADDR``/``MASTER_PORT`` (torchrun sets them; under srun export them). The
        ranks wait for each other at most ``$DATE_EDIT_JOIN_TIMEOUT`` seconds (900) to start, then 2 hours a step.

        Raises:
            ConfigError: the launcher said several processes but the group has one, or they did not all start.
        """
        if not self.active:
            return
        import torch
        import torch.distributed as td

        timeout = STEP_TIMEOUT
        addr = os.environ.get("MASTER_ADDR")
        if not addr or not os.environ.get("MASTER_PORT"):
            raise ConfigError(None, "several processes but no MASTER_ADDR/MASTER_PORT: launch with torchrun, or "
                                    "export them for srun (the first node's address and a free port)")
        port = master_port()
        # torchrun's agent already serves the store on MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE): join it as a client
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
        join = _join_timeout()
        if self.rank != 0 or agent_store:
            _wait_for_port(addr, port, join)  # so the store's own retries (and their C++ logs) never start
        try:  # the first wait (rank 0 for the others, the others for rank 0) is bounded by the join timeout
            store = td.TCPStore(addr, port, self.world, is_master=self.rank == 0 and not agent_store,
                                timeout=join)
        except td.DistError as e:
            first = (str(e).strip().splitlines() or ["no answer"])[0][:200]
            raise ConfigError(None, f"the {self.world} processes did not all meet at {addr}:{port} within "
                                    f"{join.total_seconds():.0f} s ({first}): start every rank (torchrun, srun), "
                                    f"check MASTER_ADDR/MASTER_PORT, or raise {JOIN_TIMEOUT_ENV}") from None
        store.set_timeout(timeout)
        store = td.PrefixStore(f"attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(torch.device(device))
        td.init_process_group("nccl" if cuda else "gloo", store=store, rank=self.rank, world_size=self.world,
                              timeout=timeout)
        self._group, self._store = True, store
        # a gloo group still alive when the interpreter exits, its peer gone, aborts the process (SIGABRT,
        # "terminate called without an active exception"): leave it on every way out, errors included
        atexit.register(self.close)
        self._coord = td.new_group(backend="gloo", timeout=timeout) if cuda else None
        if td.get_world_size() != self.world:
            self.close()
            raise ConfigError(None, f"WORLD_SIZE is {self.world} but the process group has {td.get_world_size()} "
                                    "process(es): start the job with torchrun, accelerate launch or srun")

    def shard(self, todo: Sequence[Any]) -> list:
        """This rank's share of ``todo``, round-robin (every rank must pass the same list)."""
        return list(todo[self.rank::self.world])

    def barrier(self) -> None:
        """Wait for every rank."""
        if self._group:
            import torch.distributed as td

            td.barrier(group=self._coord)

    def gather(self, value: Any) -> list:
        """``value`` of every rank, in rank order (one process: ``[value]``)."""
        if not self._group:
            return [value]
        import torch.distributed as td

        out: list = [None] * self.world
        td.all_gather_object(out, value, group=self._coord)
        return out

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self._group:
            return value
        import torch.distributed as td

        box = [value]
        td.broadcast_object_list(box, src=0, group=self._coord)
        return box[0]

    def add(self, key: str, amount: int = 1) -> int:
        """Add ``amount`` to the job-wide counter ``key`` and return its new value (0 reads it); every rank sees
        one counter, kept in the store of this attempt (one process: a local one)."""
        if self._store is None:
            self._counts[key] = self._counts.get(key, 0) + amount
            return self._counts[key]
        return int(self._store.add(key, amount))

    def close(self) -> None:
        """Leave the process group (so a restart attempt starts clean, and the exit never aborts); again: no-op."""
        if self._group:
            import torch.distributed as td

            self._group, self._store, self._coord = False, None, None
            atexit.unregister(self.close)
            if td.is_initialized():
                td.destroy_process_group()


class JobProgress:
    """A progress bar of a whole job, on rank 0 only: it counts the items every rank has finished (through the
    job's store), so under several processes it shows the job, not rank 0's share.

    Args:
        dist: this process's place in the job (joined already).
        total: items of the whole job (every rank passes the same number).
        enabled: draw a bar at all (e.g. stderr is a terminal and no ``--quiet``); off, only the counting runs.
        desc: the bar's label.
        key: the counters' name in the job's store (one per kind of job).
        postfix: one process only: text after the bar, read at each step (e.g. ok / skipped / failed counts).
    """

    def __init__(self, dist: Dist, total: int, *, enabled: bool, desc: str, key: str = "date-edit/progress",
                 postfix: Callable[[], str] | None = None) -> None:
        self.dist, self.key, self.postfix, self._phase, self.bar = dist, key, postfix, 0, None
        if enabled and dist.main and total > 0:
            import sys

            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", desc=desc, file=sys.stderr, dynamic_ncols=True)

    def step(self, n: int = 1) -> None:
        """This rank finished ``n`` more items."""
        self._show(self.dist.add(f"{self.key}/done", n))

    def wait_all(self, check: Callable[[], None] | None = None, poll_s: float = 0.25,
                 stall_s: float = STEP_TIMEOUT.total_seconds()) -> None:
        """This rank's share is done: rank 0 keeps its bar moving (and calls ``check()``, which may raise: an
        interrupt, say) until every rank's is, then all meet (a barrier). Rank 0 stops waiting on the others after
        ``stall_s`` seconds without progress (the barrier's own timeout then names what is wrong)."""
        import time

        d = self.dist
        self._phase += 1
        finished = f"{self.key}/finished{self._phase}"
        d.add(finished, 1)
        if d.active and d.main and (self.bar is not None or check is not None):
            last, since = -1, time.monotonic()
            while d.add(finished, 0) < d.world and time.monotonic() - since < stall_s:
                if check is not None:
                    check()
                done = d.add(f"{self.key}/done", 0)
                if done != last:
                    last, since = done, time.monotonic()
                self._show(done)
                time.sleep(poll_s)
        self._show(d.add(f"{self.key}/done", 0))
        d.barrier()

    def close(self) -> None:
        """Take the bar off the terminal's last line (leaving its final state)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _show(self, done: int) -> None:
        if self.bar is not None:
            self.bar.n = done
            if self.postfix is not None and not self.dist.active:
                self.bar.set_postfix_str(self.postfix(), refresh=False)
            self.bar.refresh()
