"""Warm worker pools: cold starts, per-action concurrency, global cap, idle reaping, pre-warming.

An action annotated ``prewarm`` (``true`` for as many workers as its concurrency, or a
number) gets that many workers started and initialised as soon as it is created or
updated, and when the runner starts; the idle reaper keeps that many. Its first calls
then find warm workers instead of paying the interpreter start and the code import.
OpenWhisk keeps pre-started runtime containers ("stem cells") for a similar reason;
this goes one step further and loads the action's code too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Coroutine, Mapping
from typing import Any

from labkit.faas.activation import WHISK_ERROR, Execution, Verdict, judge_init, judge_run
from labkit.faas.cgroup import MemoryGroups
from labkit.faas.config import AUTH_ENV, RunnerSettings
from labkit.faas.invocation import (
    MB,
    PREWARM_SLOT_WAIT_S,
    ActionPool,
    Invocation,
    ShuttingDown,
    _fq_name,
    _identity,
    _kill_strays,
    init_message,
    now_ms,
    prewarm_count,
    run_message,
)
from labkit.faas.models import Msg
from labkit.faas.worker import Outcome, Worker

log = logging.getLogger(__name__)


class WorkerManager:
    """Runs activations on warm workers, starting and retiring them as needed."""

    def __init__(self, settings: RunnerSettings) -> None:
        """Prepare an empty manager; call :meth:`start` inside the event loop.

        Args:
            settings: Runner settings (caps, timeouts, data dir).
        """
        self._settings = settings
        self._workdirs = settings.data_dir / "workers"
        self._pools: dict[tuple[str, str], ActionPool] = {}
        self._workers: set[Worker] = set()
        self._live = 0
        self._slots = asyncio.Condition()
        self._background: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closing = False
        self._env = self._worker_env()
        self._groups = MemoryGroups()

    @staticmethod
    def _worker_env() -> dict[str, str]:
        """The runner's environment minus its secret, plus worker tuning."""
        env = {k: v for k, v in os.environ.items() if k != AUTH_ENV}
        env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", MALLOC_ARENA_MAX="2")
        return env

    async def start(self) -> None:
        """Clear what a crashed runner left behind, then start the idle reaper."""
        await asyncio.to_thread(_kill_strays, self._workdirs)
        await asyncio.to_thread(self._groups.sweep)
        with contextlib.suppress(FileNotFoundError):
            for stale in self._workdirs.iterdir():
                await asyncio.to_thread(shutil.rmtree, stale, True)
        self._workdirs.mkdir(parents=True, exist_ok=True)
        self._reaper = asyncio.create_task(self._reap_forever())

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of all live workers."""
        return [w.pid for w in self._workers]

    # --- activations -------------------------------------------------------

    async def execute(self, inv: Invocation) -> Execution:
        """Run one activation, waiting for a free worker slot when needed.

        ``waitTime`` covers queueing and, on a cold start, starting the
        interpreter; ``initTime`` covers loading the action's code only, as in
        OpenWhisk where container creation is not part of init.

        Args:
            inv: The invocation.

        Returns:
            The finished execution (never raises for action failures).
        """
        pool = self._pool_for(inv.action)
        async with pool.gate:
            try:
                worker, cold = await self._check_out(pool, inv.action)
            except ShuttingDown:
                return self._internal_error(inv, now_ms(), Msg.SHUTDOWN)
            except Exception:
                log.exception("could not start a worker for %s", _fq_name(inv.action))
                return self._internal_error(inv, now_ms())
            start_ms = now_ms()
            try:
                return await self._execute_on(pool, worker, inv, start_ms, cold)
            except Exception:
                log.exception("internal error running %s", _fq_name(inv.action))
                return self._internal_error(inv, start_ms)

    @staticmethod
    def _internal_error(inv: Invocation, start_ms: int, message: str = Msg.INTERNAL) -> Execution:
        verdict = Verdict(WHISK_ERROR, {"error": message})
        return Execution(start_ms, now_ms(), max(0, start_ms - inv.arrived_ms), verdict)

    async def _execute_on(
        self, pool: ActionPool, worker: Worker, inv: Invocation, start_ms: int, cold: bool
    ) -> Execution:
        """Initialise a fresh worker if ``cold``, then run the activation on it."""
        limits = inv.action["limits"]
        wait_ms = max(0, start_ms - inv.arrived_ms)
        init_ms: int | None = None
        logs: list[str] = []
        try:
            if cold:
                init = await worker.init(init_message(inv.action, self._settings.effective_api_host), limits["timeout"] / 1000, limits["logs"] * MB)
                init_ms, logs = init.elapsed_ms, init.logs
                verdict = self._shutdown_verdict(init) or judge_init(init, limits["timeout"])
                if verdict is not None:
                    await self._discard(worker)
                    return Execution(start_ms, now_ms(), wait_ms, verdict, logs, init_ms)
            outcome = await worker.run(run_message(inv), limits["timeout"] / 1000, limits["logs"] * MB)
        except BaseException:
            await self._discard(worker)
            raise
        verdict = self._shutdown_verdict(outcome) or judge_run(
            outcome, limits["timeout"], self._settings.max_payload_bytes
        )
        await self._check_in(pool, worker, healthy=outcome.failure is None)
        return Execution(start_ms, now_ms(), wait_ms, verdict, logs + outcome.logs, init_ms)

    def _shutdown_verdict(self, outcome: Outcome) -> Verdict | None:
        """A worker killed by shutdown is the platform's failure, not the action's."""
        if self._closing and outcome.failure is not None:
            return Verdict(WHISK_ERROR, {"error": Msg.SHUTDOWN})
        return None

    async def _check_out(self, pool: ActionPool, action: Mapping[str, Any]) -> tuple[Worker, bool]:
        """Get a warm worker of this action, else start one (the bool says cold).

        Waiting for a slot under the global cap, a warm worker of the same
        action that comes free is reused rather than evicted.
        """
        async with self._slots:
            while True:
                if self._closing:
                    raise ShuttingDown()
                worker = self._take_idle(pool)
                if worker is not None:
                    return worker, False
                if self._live < self._settings.max_workers:
                    self._live += 1
                    break
                victim = self._evict_lru_idle()
                if victim is None:
                    await self._slots.wait()
                    continue
                self._workers.discard(victim)
                self._live -= 1
                self._in_background(victim.stop(grace_s=0.1))
        return await self._spawn(action), True

    async def _spawn(self, action: Mapping[str, Any]) -> Worker:
        """Start a process for ``action`` in an already reserved slot."""
        memory = action["limits"]["memory"] * MB
        try:
            worker = await Worker.spawn(
                self._workdirs / uuid.uuid4().hex,
                self._env,
                memory_limit_bytes=memory,
                groups=self._groups,
            )
        except BaseException:
            await self._release_slot()
            raise
        self._workers.add(worker)
        if self._closing:  # shutdown began while this process was starting
            await self._discard(worker)
            raise ShuttingDown()
        return worker

    # --- pools and slots ---------------------------------------------------

    def _pool_for(self, action: Mapping[str, Any]) -> ActionPool:
        key = (action["namespace"], action["name"])
        identity = _identity(action)
        pool = self._pools.get(key)
        if pool is not None and pool.identity == identity:
            return pool
        if pool is not None and pool.identity[1] > identity[1]:
            # A record read just before an update: run it once, without
            # displacing the newer version's warm workers.
            stale = ActionPool(identity, action["limits"]["concurrency"])
            stale.retired = True
            return stale
        if pool is not None:
            self._retire_pool(pool)
        pool = ActionPool(identity, action["limits"]["concurrency"])
        self._pools[key] = pool
        return pool

    def prewarm(self, action: Mapping[str, Any]) -> None:
        """Start and initialise the workers ``action`` asks to keep warm, in the background.

        Only free slots under the global cap are used (no idle worker of another action is
        evicted for this); a worker that fails to start or load the code is dropped quietly,
        and the action's first call then starts one the usual way (and reports the error).
        """
        count = prewarm_count(action)
        if count and not self._closing:
            pool = self._pool_for(action)
            pool.keep_warm = count
            missing = count - len(pool.idle)
            for _ in range(max(0, missing)):
                self._in_background(self._prewarm_one(pool, action))

    async def _prewarm_one(self, pool: ActionPool, action: Mapping[str, Any]) -> None:
        if not await self._reserve_free_slot(pool):
            return
        try:
            worker = await self._spawn(action)
        except ShuttingDown:
            return
        except Exception:
            log.warning("could not pre-warm a worker for %s", _fq_name(action), exc_info=True)
            return
        limits = action["limits"]
        try:
            init = await worker.init(init_message(action, self._settings.effective_api_host), limits["timeout"] / 1000, limits["logs"] * MB)
        except BaseException:
            await self._discard(worker)
            raise
        worker.logs.take()  # nobody asked: an init's logs belong to no activation
        loaded = init.failure is None and (init.reply or {}).get("ok") is True
        await self._check_in(pool, worker, healthy=loaded)
        if loaded:
            log.info("pre-warmed worker %d of %s has its code loaded", worker.pid, _fq_name(action))

    async def _reserve_free_slot(self, pool: ActionPool) -> bool:
        """Take a slot under the global cap for ``pool``, waiting a while for one (an update's
        retired workers give theirs back as they stop); False when none came free."""
        deadline = time.monotonic() + PREWARM_SLOT_WAIT_S
        async with self._slots:
            while self._live >= self._settings.max_workers:
                left = deadline - time.monotonic()
                if self._closing or pool.retired or left <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slots.wait(), left)
            if self._closing or pool.retired:
                return False
            self._live += 1
            return True

    def retire(self, namespace: str, name: str) -> None:
        """Retire an action's warm workers (after update or delete).

        In-flight activations finish on their worker, which is then stopped.
        """
        pool = self._pools.pop((namespace, name), None)
        if pool is not None:
            self._retire_pool(pool)

    def _retire_pool(self, pool: ActionPool) -> None:
        pool.retired = True
        idle, pool.idle = pool.idle, []
        for worker in idle:
            self._in_background(self._discard(worker))

    def _take_idle(self, pool: ActionPool) -> Worker | None:
        """Pop the most recently used live idle worker (warmest caches)."""
        while pool.idle:
            worker = pool.idle.pop()
            if worker.alive:
                return worker
            self._in_background(self._discard(worker))
        return None

    async def _check_in(self, pool: ActionPool, worker: Worker, healthy: bool) -> None:
        if not healthy or pool.retired or not worker.alive:
            await self._discard(worker)
            return
        pool.idle.append(worker)
        async with self._slots:
            self._slots.notify_all()  # a waiter for a slot may now evict this idle worker

    async def _release_slot(self) -> None:
        async with self._slots:
            self._live -= 1
            self._slots.notify_all()

    def _evict_lru_idle(self) -> Worker | None:
        candidates = [(w.last_used, pool, w) for pool in self._pools.values() for w in pool.idle]
        if not candidates:
            return None
        _, pool, worker = min(candidates, key=lambda c: c[0])
        pool.idle.remove(worker)
        return worker

    async def _discard(self, worker: Worker) -> None:
        """Stop a worker and give its slot back (safe to call twice)."""
        if worker not in self._workers:
            return
        self._workers.discard(worker)
        try:
            await worker.stop()
        finally:
            await self._release_slot()

    # --- housekeeping ------------------------------------------------------

    def _in_background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)  # keep a reference until done
        task.add_done_callback(self._background.discard)

    async def _reap_forever(self) -> None:
        interval = max(0.05, min(1.0, self._settings.idle_timeout_s / 4))
        while True:
            await asyncio.sleep(interval)
            await self.reap_idle()

    async def reap_idle(self) -> None:
        """Stop workers idle longer than the idle timeout (or already dead)."""
        deadline = time.monotonic() - self._settings.idle_timeout_s
        for pool in list(self._pools.values()):
            dead = [w for w in pool.idle if not w.alive]
            # oldest first; a pre-warmed action's last keep_warm workers stay
            idle = sorted((w for w in pool.idle if w.alive), key=lambda w: w.last_used)
            spare = idle[: max(0, len(idle) - pool.keep_warm)]
            expired = dead + [w for w in spare if w.last_used <= deadline]
            for worker in expired:
                pool.idle.remove(worker)
                await self._discard(worker)

    async def close(self) -> None:
        """Stop every worker (idle or busy) and the reaper; safe to call twice."""
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
        for pool in self._pools.values():
            pool.retired = True
        async with self._slots:
            self._slots.notify_all()  # queued activations wake up and give up
        workers = list(self._workers)
        await asyncio.gather(*(self._discard(w) for w in workers), return_exceptions=True)
        if self._background:
            await asyncio.wait(self._background, timeout=2.0)
