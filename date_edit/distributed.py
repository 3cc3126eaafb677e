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
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Sequence

from .errors import ConfigError, DistributedError


JOIN_TIMEOUT_ENV = "DATE_EDIT_JOIN_TIMEOUT"  # seconds the ranks wait for each other at the start (default 900)
PEER_TIMEOUT_ENV = "DATE_EDIT_PEER_TIMEOUT"  # seconds a rank's heartbeat may stop before the others give up (60)
STEP_TIMEOUT = timedelta(hours=2)  # the longest one collective or store call of a running job may wait
HEARTBEAT_KEY = "date-edit/alive"  # <key>/<rank>: a counter each rank's heartbeat thread adds to
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
    peer_timeout: float = 60.0  # seconds a peer's heartbeat may stop before this rank gives up on it
    _beat: Any = None  # (thread, stop event) of this rank's heartbeat
    _seen: dict = field(default_factory=dict)  # rank -> (its heartbeat count, when it last changed: monotonic s)
    _checked: float = 0.0  # when the peers were last checked (monotonic s)
    _meets: int = 0  # rendezvous points passed (each collective is one, in the same order on every rank)

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
            raise ConfigError(None, f"the launcher says rank {rank} of {world} processes (local rank {local}): "
                                    "check WORLD_SIZE, RANK and LOCAL_RANK")
        if world > 1:  # what init will need, checked before anything loads
            # c10d's own warnings (a dead peer's socket, with 20 lines of C++ frames) would bury the one line that
            # says what happened; read when torch is first imported, which the CLI has not done yet
            os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
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
        ranks wait for each other at most ``$DATE_EDIT_JOIN_TIMEOUT`` seconds (900) to start, then 2 hours a step;
        each rank's heartbeat lets the others name it within ``$DATE_EDIT_PEER_TIMEOUT`` seconds (60) when it dies.

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
        self.peer_timeout = _peer_timeout()
        self._start_heartbeat(addr, port, f"attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}")
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
        """Wait for every rank (a dead one is named within :attr:`peer_timeout` seconds: :meth:`meet`)."""
        if self._group:
            import torch.distributed as td

            self.meet()
            self._collective(lambda: td.barrier(group=self._coord))

    def gather(self, value: Any) -> list:
        """``value`` of every rank, in rank order (one process: ``[value]``)."""
        if not self._group:
            return [value]
        import torch.distributed as td

        out: list = [None] * self.world
        self.meet()
        self._collective(lambda: td.all_gather_object(out, value, group=self._coord))
        return out

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self._group:
            return value
        import torch.distributed as td

        box = [value]
        self.meet()
        self._collective(lambda: td.broadcast_object_list(box, src=0, group=self._coord))
        return box[0]

    def add(self, key: str, amount: int = 1) -> int:
        """Add ``amount`` to the job-wide counter ``key`` and return its new value (0 reads it); every rank sees
        one counter, kept in the store of this attempt (one process: a local one)."""
        if self._store is None:
            self._counts[key] = self._counts.get(key, 0) + amount
            return self._counts[key]
        return int(self._ask(lambda: self._store.add(key, amount)))

    # -- liveness: every rank beats; a rank waiting on the others checks their beats, so a dead one is named

    def _start_heartbeat(self, addr: str, port: int, prefix: str) -> None:
        """Add to this rank's heartbeat counter in the store every few seconds, from a thread with its own store
        connection (so it beats while the main thread computes, or waits in a collective)."""
        import torch.distributed as td

        client = td.PrefixStore(prefix, td.TCPStore(addr, port, is_master=False, wait_for_workers=False,
                                                    timeout=timedelta(seconds=self.peer_timeout)))
        stop, key, every = threading.Event(), f"{HEARTBEAT_KEY}/{self.rank}", self._beat_interval()

        def beat() -> None:
            while not stop.is_set():
                try:
                    client.add(key, 1)
                except Exception:  # noqa: BLE001 - the store is gone: the main thread finds out and says so
                    return
                stop.wait(every)

        thread = threading.Thread(target=beat, name="date-edit-heartbeat", daemon=True)
        thread.start()
        self._beat = (thread, stop)

    def _beat_interval(self) -> float:
        return max(0.1, min(5.0, self.peer_timeout / 6))

    def check_peers(self) -> None:
        """Raise :class:`DistributedError` naming a rank whose heartbeat has not moved for :attr:`peer_timeout`
        seconds (``$DATE_EDIT_PEER_TIMEOUT``, 60): it was killed, or hangs. Cheap to call often (it reads the
        store at most every heartbeat interval)."""
        now = time.monotonic()
        if not self._group or now - self._checked < self._beat_interval():
            return
        self._checked = now
        for r in range(self.world):
            if r == self.rank:
                continue
            count = int(self._ask(lambda r=r: self._store.add(f"{HEARTBEAT_KEY}/{r}", 0)))
            seen = self._seen.get(r)
            if seen is None or seen[0] != count:
                self._seen[r] = (count, now)
            elif now - seen[1] > self.peer_timeout:
                raise DistributedError(f"rank {r} gave no sign of life for {now - seen[1]:.0f} s (killed, hung or its "
                                       f"node lost; {PEER_TIMEOUT_ENV}={self.peer_timeout:g}): rank {self.rank} stops "
                                       "too; rerun the same command to finish the job")

    def meet(self) -> None:
        """Wait in the store until every rank reaches this point, checking the others' heartbeats meanwhile; then a
        collective right after it finds every rank there. Every rank passes the same points in the same order."""
        if not self._group:
            return
        self._meets += 1
        key = f"date-edit/meet/{self._meets}"
        self._ask(lambda: self._store.add(key, 1))
        while int(self._ask(lambda: self._store.add(key, 0))) < self.world:
            self.check_peers()
            time.sleep(0.05)

    def _ask(self, call: Callable[[], Any]) -> Any:
        """A store call; the store gone (rank 0, or torchrun's agent, that serves it died) is one line."""
        import torch.distributed as td

        try:
            return call()
        except (td.DistError, RuntimeError) as e:
            raise DistributedError(f"rank {self.rank} lost the job's store at MASTER_ADDR:MASTER_PORT, which rank 0 "
                                   f"serves: rank 0 was killed or its node lost ({type(e).__name__}); rerun the same "
                                   "command to finish the job") from None

    def _collective(self, call: Callable[[], Any]) -> Any:
        """A collective among ranks that have all met; one that leaves meanwhile is one line."""
        import torch.distributed as td

        try:
            return call()
        except (td.DistError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise DistributedError(f"rank {self.rank} lost a peer in the middle of a collective ({first}); rerun the "
                                   "same command to finish the job") from None

    def close(self) -> None:
        """Leave the process group (so a restart attempt starts clean, and the exit never aborts); again: no-op."""
        if self._beat is not None:
            thread, stop = self._beat
            stop.set()
            thread.join(timeout=2.0)
            self._beat = None
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
        d = self.dist
        self._phase += 1
        finished = f"{self.key}/finished{self._phase}"
        d.add(finished, 1)
        if d.active and d.main and (self.bar is not None or check is not None):
            last, since = -1, time.monotonic()
            while d.add(finished, 0) < d.world and time.monotonic() - since < stall_s:
                if check is not None:
                    check()
                d.check_peers()  # a rank that died is named within its peer timeout, not after stall_s
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
