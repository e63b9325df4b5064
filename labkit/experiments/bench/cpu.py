"""Where the CPU goes: each process's CPU time over the saturation burst, per image that came through.

Sampled with psutil (:mod:`labkit.stack.usage`) just before the burst starts and just after its
last image is recorded: each service's process tree (the FaaS runner apart from its action
workers), and the load client (this process: the uploaders, and the polling for metrics lines).
Only the native backend has local processes to sample; elsewhere the table is empty.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pandas as pd

from labkit.stack.lab import Lab
from labkit.stack.usage import cpu_per_image_ms, cpu_seconds, service_pids

# What each row is, in the table's words: the service's name says little to a reader of a plot.
LABELS = {"nodered": "Node-RED", "faas": "FaaS runner", "faas workers": "action workers",
          "storage": "gateway (uploads, events)", "storage-out": "gateway (action, webhook)",
          "toxiproxy": "Toxiproxy", "kafka": "Kafka", "mail": "Mailpit", "load client": "load client"}


def with_cpu(lab: Lab, phase: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``phase`` (a saturation burst) and add ``cpu_ms_per_image``: each process's CPU ms per
    image that came through (``ok``), and ``all``, their sum."""
    pids = service_pids(lab.backend)
    before = cpu_seconds(pids, os.getpid())
    point = phase()
    after = cpu_seconds(pids, os.getpid())
    point["cpu_ms_per_image"] = cpu_per_image_ms(before, after, point.get("ok", 0))
    return point


def cpu_table(data: dict[str, Any]) -> pd.DataFrame:
    """One row per process, most expensive first, ``all`` last: CPU ms per image and its share."""
    per_image = dict(data["saturation"].get("cpu_ms_per_image") or {})
    total = per_image.pop("all", None)
    rows = [{"process": LABELS.get(name, name), "cpu_ms_per_image": ms} for name, ms in per_image.items()]
    table = pd.DataFrame(rows, columns=["process", "cpu_ms_per_image"])
    table = table.sort_values("cpu_ms_per_image", ascending=False)
    if total is not None:
        table = pd.concat([table, pd.DataFrame([{"process": "all", "cpu_ms_per_image": total}])])
        table["share"] = (table["cpu_ms_per_image"] / total).round(3) if total else 0.0
    return table.set_index("process")


def where_the_cpu_goes(data: dict[str, Any]) -> str:
    """One sentence from the table: the total, the top process and its share, and the resize's part."""
    table = cpu_table(data)
    if table.empty:
        return "No per-process CPU was sampled (the lab's services are not local processes)."
    total, top = table.loc["all", "cpu_ms_per_image"], table.drop(index="all").iloc[0]
    bare = data["bare"]["ms_per_image_median"]
    return (f"Each image cost {total:.1f} ms of CPU across the lab's processes, against {bare:.1f} ms for the "
            f"resize alone in the bare loop; the most expensive process is {top.name} at "
            f"{top.cpu_ms_per_image:.1f} ms per image ({top.share:.0%} of the total).")
