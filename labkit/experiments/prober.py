"""Health probes during a run: every service's readiness, and the pipeline as a whole.

The probes table (``t_ms, service, ok``) is what the report's availability figures are
made from (:func:`labkit.analysis.sla.availability`).

Example:
    >>> with Prober(lab) as prober:        # doctest: +SKIP
    ...     run_the_load()
    >>> prober.table()                     # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Self

import httpx
import pandas as pd
from tenacity import Retrying, retry_if_result, stop_never, wait_fixed

from labkit.pipeline.upload import UPLOAD_PATH
from labkit.stack.lab import Lab
from labkit.stack.services import PATH_SERVICES, SERVICE_NAMES

PROBE_INTERVAL_S = 0.5


class Prober:
    """Probes every service's readiness, and the pipeline as a whole, every ``interval_s`` in a thread.

    The synthetic ``pipeline`` probe is ok when Node-RED's upload endpoint answers (a POST
    without a key gets its 400) and every service an image passes through
    (:data:`labkit.stack.services.PATH_SERVICES`) is ready. Each
    round runs in a small pool, so a probe that hangs until its timeout (a paused service)
    does not stretch the interval between rounds.
    """

    def __init__(self, lab: Lab, interval_s: float = PROBE_INTERVAL_S):
        self.lab, self.interval_s = lab, interval_s
        self._rows: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="labkit-prober", daemon=True)
        self._http = httpx.Client(base_url=lab.endpoints["nodered"], timeout=1.0)
        self._rounds = ThreadPoolExecutor(max_workers=4, thread_name_prefix="labkit-probe")

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._rounds.shutdown()
        self._http.close()

    def table(self) -> pd.DataFrame:
        """One row per probe: ``t_ms`` (epoch ms), ``service``, ``ok``, in time order."""
        with self._lock:
            frame = pd.DataFrame(list(self._rows), columns=["t_ms", "service", "ok"])
        return frame.sort_values(["t_ms", "service"], kind="stable").reset_index(drop=True)

    def _loop(self) -> None:
        # A round every interval until stopped; sleeping on the stop event ends the wait at once.
        Retrying(sleep=self._stop.wait, wait=wait_fixed(self.interval_s), stop=stop_never,
                 retry=retry_if_result(lambda _: not self._stop.is_set()))(self._start_round)

    def _start_round(self) -> None:
        if not self._stop.is_set():  # the wait that ended may have been the stop
            self._rounds.submit(self._round, round(time.time() * 1000))

    def _round(self, t_ms: int) -> None:
        health = self._services()
        pipeline_ok = self._upload_answers() and all(health.get(s, False) for s in PATH_SERVICES)
        rows = [{"t_ms": t_ms, "service": s, "ok": ok} for s, ok in health.items()]
        with self._lock:
            self._rows += [*rows, {"t_ms": t_ms, "service": "pipeline", "ok": pipeline_ok}]

    def _services(self) -> dict[str, bool]:
        backend = self.lab.backend
        if not hasattr(backend, "service"):  # compose/remote: their status() probes each service
            return {s.name: s.healthy for s in backend.status()}
        return {name: bool(backend.service(name).readiness().probe()) for name in SERVICE_NAMES}

    def _upload_answers(self) -> bool:
        try:
            return self._http.post(UPLOAD_PATH, content=b"").status_code == 400
        except httpx.HTTPError:
            return False
