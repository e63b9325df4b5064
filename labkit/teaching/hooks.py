"""Where a student's code plugs into the real pipeline: the course's hooks.

An exercise never edits labkit. The student writes a plain function in a notebook cell and
hands it to one of these hooks, which runs it *inside* the pipeline and returns what the
pipeline did, for the graders (:mod:`labkit.teaching.pipeline_graders`) to judge:

- :func:`upload_with_backoff`: the backoff policy of the pipeline's first hop, the client's
  upload to Node-RED's ``/upload`` endpoint. ``backoff(k)`` is called after the k-th failed
  attempt and returns the seconds to sleep before the next one, or ``None`` to give up. The
  uploads go through a Toxiproxy proxy of their own that resets every connection for
  ``fault_s`` seconds from the start (the ``reset_peer`` toxic of notebook 05), so the policy
  is measured under a real fault; every attempt is timed.
- :func:`resize_with_policy`: the size policy of the ``resize`` action. ``size_policy(width,
  height)`` returns the output's ``(width, height)``; the hook redeploys the action with the
  student's function in place of its own ``fit_size``, pushes images through the pipeline,
  puts the lab's own action back (always, in a ``finally``), pushes the same images through it,
  and returns both runs' output sizes and activation durations.

Both need a lab whose pipeline stands (:func:`labkit.pipeline.deploy.stand_up`).

Example:
    >>> run = upload_with_backoff(lab, lambda k: None if k >= 8 else 0.1 * k, n_images=4)  # doctest: +SKIP
    >>> run.attempts.groupby("key").size()                                                # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import math
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pandas as pd

from labkit.errors import LabConfigError
from labkit.experiments.faults import toxic_name
from labkit.pipeline import deploy, upload
from labkit.pipeline.activations import activation_row
from labkit.pipeline.images import PoolImage, generate_pool
from labkit.stack.lab import Lab

Backoff = Callable[[int], "float | None"]
SizePolicy = Callable[[int, int], "tuple[int, int]"]

# The proxy the backoff exercise uploads through (loopback, a port Toxiproxy picks), and its toxic.
STUDENT_PROXY = "labkit-student-upload"
RESET = toxic_name("reset_peer", "upstream")
LONGEST_SLEEP_S = 60.0  # a backoff that asks for more is a mistake, named at once
MAX_EDGE_PX = 8192  # the action's own limit on an output edge
WAIT_S = 120.0


# ------------------------------------------------------------------ the backoff hook


@dataclass
class BackoffRun:
    """What the pipeline did with the student's backoff policy under the fault.

    Attributes:
        attempts: One row per upload attempt: ``key``, ``attempt`` (1, 2, ...), ``start_s``,
            ``end_s`` (from the run's start), ``outcome`` (``HTTP 200``, or the error, e.g.
            ``ReadError``), ``sleep_s`` (what the policy asked for after it; NaN after the last).
        uploads: One row per image: ``key``, ``status`` (HTTP, None when it gave up),
            ``attempts``, ``gave_up``.
        metrics: The pipeline's metrics line of each image that was uploaded.
        fault_s: How long the fault lasted, from the run's start (measured).
    """

    attempts: pd.DataFrame
    uploads: pd.DataFrame
    metrics: pd.DataFrame
    fault_s: float

    @property
    def sleeps(self) -> pd.DataFrame:
        """Each retry's sleep as the client measured it: ``key``, ``retry`` (k), ``asked_s``,
        ``slept_s`` (the next attempt's start minus this one's end)."""
        rows = []
        for key, part in self.attempts.sort_values(["key", "attempt"]).groupby("key"):
            for (_, a), (_, b) in zip(part.iterrows(), part.iloc[1:].iterrows()):
                rows.append({"key": key, "retry": int(a["attempt"]), "asked_s": a["sleep_s"],
                             "slept_s": b["start_s"] - a["end_s"]})
        return pd.DataFrame(rows, columns=["key", "retry", "asked_s", "slept_s"])

    def plot(self, ax=None):
        """Each image's attempts on a time line, the fault shaded: one message, when each retry went."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(9, 0.5 + 0.45 * len(self.uploads)))[1]
        keys = list(self.uploads["key"])
        ax.axvspan(0, self.fault_s, color="tab:red", alpha=0.12, label=f"connections reset ({self.fault_s:.1f} s)")
        for ok, colour, label in ((False, "tab:red", "attempt reset"), (True, "tab:green", "attempt answered")):
            part = self.attempts[self.attempts["outcome"].str.startswith("HTTP") == ok]
            ax.scatter(part["start_s"], [keys.index(k) for k in part["key"]], color=colour, label=label, zorder=3)
        ax.set_yticks(range(len(keys)), [k.rsplit("/", 1)[-1] for k in keys])
        ax.set_xlabel("time since the first upload (s)")
        ax.set_title("Your backoff under the fault: every upload attempt")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
        return ax


def _sleep_for(backoff: Backoff, k: int) -> float | None:
    delay = backoff(k)
    if delay is None:
        return None
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= LONGEST_SLEEP_S \
            or math.isnan(delay):
        raise LabConfigError(f"backoff({k}) returned {delay!r}: return the seconds to sleep, a number from 0 to "
                             f"{LONGEST_SLEEP_S:g}, or None to give up.")
    return float(delay)


def _upload_retrying(http: httpx.Client, image: PoolImage, key: str, backoff: Backoff, t0: float,
                     log: list[dict]) -> dict:
    """One image's upload, retried by the student's policy; every attempt appended to ``log``."""
    k = 0
    while True:
        k += 1
        row = {"key": key, "attempt": k, "start_s": time.monotonic() - t0}
        try:
            response = http.post(upload.UPLOAD_PATH, params={"key": key}, content=image.data,
                                 headers={"Content-Type": image.content_type, **upload.CLIENT_HEADERS})
            row["outcome"], again = f"HTTP {response.status_code}", upload._not_ready(response) is not None
        except upload.CLIENT_RETRY_ON as e:  # the request got no answer: worth another attempt
            row["outcome"], again, response = type(e).__name__, True, None
        row["end_s"] = time.monotonic() - t0
        log.append(row)
        if not again:
            return {"key": key, "status": response.status_code, "attempts": k, "gave_up": False}
        delay = _sleep_for(backoff, k)
        if delay is None:
            return {"key": key, "status": None, "attempts": k, "gave_up": True}
        row["sleep_s"] = delay
        time.sleep(delay)


def upload_with_backoff(lab: Lab, backoff: Backoff, n_images: int = 4, fault_s: float = 1.5, seed: int = 0,
                        timeout_s: float = WAIT_S) -> BackoffRun:
    """Upload ``n_images`` at once through a proxy that resets every connection for ``fault_s``
    seconds, each retried by ``backoff``; wait for the pipeline's line of every uploaded image.

    Args:
        lab: A running lab whose pipeline stands.
        backoff: ``backoff(k)``: the seconds to sleep after the k-th failed attempt, or None to give up.
        n_images: Images uploaded at once (1..16).
        fault_s: How long the proxy resets connections, from the first upload (0.1..30 s).
        seed: The images' seed.
        timeout_s: How long to wait for the pipeline's lines.

    Raises:
        LabConfigError: Bad arguments, or ``backoff`` returned something that is not a delay.
        ServiceError: Toxiproxy refused, or an uploaded image got no metrics line in time.
    """
    if not 1 <= n_images <= 16 or not 0.1 <= fault_s <= 30:
        raise LabConfigError(f"n_images must be 1..16 and fault_s 0.1..30 s; got {n_images} and {fault_s}")
    _sleep_for(backoff, 1)  # a policy that cannot answer fails here, before any fault is set
    nodered = urlsplit(lab.endpoints["nodered"])
    toxiproxy = lab.toxiproxy()
    if STUDENT_PROXY in toxiproxy.proxies():  # left by a kernel that died mid-run
        toxiproxy.delete_proxy(STUDENT_PROXY)
    proxy = toxiproxy.ensure_proxy(STUDENT_PROXY, "127.0.0.1:0", f"{nodered.hostname}:{nodered.port}")
    run_id = uuid.uuid4().hex[:8]
    images = generate_pool(n_images, seed=seed)
    keys = [f"backoff-{run_id}/{image.key.rsplit('/', 1)[-1]}" for image in images]
    log: list[dict] = []
    ended: dict[str, float] = {}
    timer: threading.Timer | None = None
    try:
        toxiproxy.add_toxic(STUDENT_PROXY, "reset_peer", stream="upstream", name=RESET, timeout=0)
        t0 = time.monotonic()

        def heal() -> None:
            toxiproxy.remove_toxic(STUDENT_PROXY, RESET)
            ended["fault_s"] = time.monotonic() - t0

        timer = threading.Timer(fault_s, heal)
        timer.start()
        limits = httpx.Limits(max_connections=n_images, max_keepalive_connections=0)
        with httpx.Client(base_url=f"http://{proxy['listen']}", timeout=upload.UPLOAD_TIMEOUT_S, limits=limits) as http, \
                ThreadPoolExecutor(max_workers=n_images) as pool:
            rows = list(pool.map(lambda ik: _upload_retrying(http, ik[0], ik[1], backoff, t0, log), zip(images, keys)))
        timer.join()
    finally:
        if timer is not None:
            timer.cancel()
        toxiproxy.delete_proxy(STUDENT_PROXY)
    uploads = pd.DataFrame(rows)
    uploaded = list(uploads.loc[uploads["status"] == 200, "key"])
    metrics = upload.wait_for(lab, uploaded, timeout_s=timeout_s) if uploaded else pd.DataFrame()
    attempts = pd.DataFrame(log, columns=["key", "attempt", "start_s", "end_s", "outcome", "sleep_s"])
    return BackoffRun(attempts.sort_values(["key", "attempt"], ignore_index=True), uploads, metrics,
                      ended.get("fault_s", fault_s))


# ------------------------------------------------------------------ the size-policy hook


@dataclass
class ResizeRun:
    """Both runs of :func:`resize_with_policy`: one row per image and policy.

    Columns: ``policy`` (``yours`` or ``the lab's``), ``key``, ``outcome``, ``width_in``,
    ``height_in``, ``width_out``, ``height_out``, ``asked`` (``(w, h)`` your policy gives for the
    input; None on the lab's rows), ``bytes_out``, ``action_resize_ms`` (the action's own resize step) and
    ``duration_ms`` (the activation's duration).
    """

    rows: pd.DataFrame
    restored: bool

    def cost(self) -> pd.DataFrame:
        """Per policy: images, median and range of the activation's duration and of the resize step,
        and the median output size in bytes."""
        g = self.rows.groupby("policy", sort=False)
        return pd.DataFrame({
            "images": g.size(),
            "duration ms (median)": g["duration_ms"].median(), "duration ms (min–max)": g["duration_ms"].agg(
                lambda s: f"{s.min():.0f}–{s.max():.0f}"),
            "resize ms (median)": g["action_resize_ms"].median(),
            "output bytes (median)": g["bytes_out"].median()})


def policy_source(size_policy: SizePolicy) -> str:
    """The student's function as action code: its own source, and ``fit_size`` (the action's
    sizing step, which ``resize_image`` calls) redefined to call it.

    Raises:
        LabConfigError: The function has no source to read (a lambda or a builtin).
    """
    name = getattr(size_policy, "__name__", "")
    try:
        source = textwrap.dedent(inspect.getsource(size_policy))
    except (OSError, TypeError) as e:
        raise LabConfigError("the size policy must be a function defined with `def` in a cell, "
                             "so its source can be sent to the action") from e
    if not name.isidentifier() or name == "<lambda>":
        raise LabConfigError("the size policy must be a function defined with `def`, not a lambda")
    return (f"\n\n# ---- the size policy deployed by labkit.teaching.hooks.resize_with_policy ----\n{source}\n"
            f"def fit_size(width, height, max_edge):  # replaces the action's own: {name}(width, height) decides\n"
            f"    w, h = {name}(width, height)\n"
            "    return int(w), int(h)\n")


def _checked_policy(size_policy: SizePolicy, images: list[PoolImage]) -> None:
    """Call the policy on each input size before deploying it: a bad answer is one line here,
    not an action error per image."""
    for image in images:
        answer = size_policy(image.width, image.height)
        if not (isinstance(answer, (tuple, list)) and len(answer) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_EDGE_PX for v in answer)):
            raise LabConfigError(f"size_policy({image.width}, {image.height}) returned {answer!r}: return a pair "
                                 f"of whole numbers of pixels (width, height), each 1..{MAX_EDGE_PX}.")


def _through_pipeline(lab: Lab, images: list[PoolImage], policy: str, timeout_s: float) -> pd.DataFrame:
    sent = upload.push(lab, images, progress=False, prefix=f"size-{uuid.uuid4().hex[:8]}/")
    rows = upload.wait_for(lab, sent["key"], timeout_s=timeout_s)
    durations = {}
    with lab.faas() as faas:
        for activation in rows["activation_id"].dropna():
            durations[activation] = activation_row(faas.get_activation(activation))["duration_ms"]
    columns = ["key", "outcome", "width_in", "height_in", "width_out", "height_out", "bytes_out", "action_resize_ms"]
    frame = rows.reindex(columns=[*columns, "activation_id"])
    for column in ("width_in", "height_in", "width_out", "height_out", "bytes_out"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame["duration_ms"] = frame["activation_id"].map(durations)
    return frame.drop(columns="activation_id").assign(policy=policy)


def resize_with_policy(lab: Lab, size_policy: SizePolicy, n_images: int = 4, seed: int = 0,
                       sizes: list[tuple[int, int]] | None = None, timeout_s: float = WAIT_S) -> ResizeRun:
    """Redeploy the ``resize`` action with ``size_policy``, push ``n_images`` through the pipeline,
    put the lab's own action back, and push the same images through it.

    Args:
        lab: A running lab whose pipeline stands.
        size_policy: ``size_policy(width, height) -> (width, height)`` of the output, in pixels;
            a function defined with ``def``, importing inside itself anything it needs.
        n_images: Images per run (1..32).
        seed: The images' seed.
        sizes: Their ``(width, height)`` choices [default: the pool's own].
        timeout_s: How long to wait for the pipeline's lines of each run.

    Raises:
        LabConfigError: The policy gives something that is not a size, or has no source.
        ServiceError: faas refused the action, or an image got no metrics line in time.
    """
    if not 1 <= n_images <= 32:
        raise LabConfigError(f"n_images must be 1..32, got {n_images}")
    images = generate_pool(n_images, seed=seed, sizes=sizes)
    _checked_policy(size_policy, images)
    code = deploy.ACTION_FILE.read_text() + policy_source(size_policy)
    wanted = deploy.action_deployment(lab, prewarm=True)
    restored = False
    try:
        with lab.faas() as faas:
            faas.put_action(deploy.ACTION, code, kind=wanted.kind, main=wanted.main, params=wanted.params,
                            limits=wanted.limits, annotations=wanted.annotations)
        yours = _through_pipeline(lab, images, "yours", timeout_s)
    finally:
        deploy.deploy_action(lab, prewarm=True)  # the lab's own action, as stand_up deploys it
        with lab.faas() as faas:
            restored = faas.get_action(deploy.ACTION)["exec"]["code"] == deploy.ACTION_FILE.read_text()
    theirs = _through_pipeline(lab, images, "the lab's", timeout_s)
    rows = pd.concat([yours, theirs], ignore_index=True)
    rows["asked"] = [tuple(size_policy(int(w), int(h))) if p == "yours" and pd.notna(w) and pd.notna(h) else None
                     for p, w, h in zip(rows["policy"], rows["width_in"], rows["height_in"])]
    return ResizeRun(rows[["policy", *[c for c in rows if c != "policy"]]], restored)
