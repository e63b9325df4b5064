"""The availability experiment: the same broker kills on one broker and on three, under a steady load.

One fault schedule, run on each topology: under an open-loop load, ``kill -9`` one Kafka broker,
start it again after ``down_s``, wait until the pipeline has recovered (an image uploaded after
the broker came back has come through), wait ``gap_s``, then kill the next broker (on one broker:
the same one again). Throughout, the lab's prober (:mod:`labkit.experiments.prober`) probes every
service twice a second. Then the pipeline drains, reconciliation runs, every image gets its fate
(:func:`labkit.experiments.settle.settle`), and :func:`labkit.pipeline.audit.audit` checks that
nothing under the run's prefix is lost or stale.

**What "up" means with three brokers.** The prober's ``pipeline`` probe needs every service on
the image's path, each broker included, so it would count a replicated cluster that lost one
broker as down. :class:`QuorumProber` adds the probe this experiment judges, ``pipeline (quorum)``:
Node-RED's upload endpoint answers, every other service on the path is ready, and a majority of
the brokers is (2 of 3: enough for ``min.insync.replicas`` 2; 1 of 1).

**Where the replicated lab comes from.** The notebooks run on one lab with one broker.
:func:`replicated_lab` stands up a second, short-lived lab with ``kafka_brokers`` 3 at a scratch
port offset and data dir, and takes it down (data wiped) in a ``finally``.

Analysis: :func:`per_fault` (downtime, outages, the longest gap between completed images, the
recovery and the error budget each fault burns), :func:`uptime_verdicts` (the 99.9% clause on
time, :mod:`labkit.analysis.uptime_clause`, beside the probe-count bound), :func:`latency_effect`
(p99 during the faults and outside them, with distribution-free bounds).

Example:
    >>> run = run_availability(lab, "ci", "runs")          # doctest: +SKIP
    >>> run.faults[["topology", "target", "downtime_s"]]   # doctest: +SKIP
"""

from labkit.experiments.availability.analysis import (
    faults_per_budget,
    latency_effect,
    longest_gap_s,
    outage_downtime,
    per_fault,
    uptime_verdicts,
)
from labkit.experiments.availability.labs import replicated_lab, scratch_offset
from labkit.experiments.availability.model import (
    BROKER,
    BUDGET_S,
    QUORUM_PROBE,
    SCALES,
    TOPOLOGIES,
    UPTIME_TARGET,
    AvailabilityScale,
    TopologyRun,
    scale_of,
)
from labkit.experiments.availability.plots import downtime_plot, timeline_plot
from labkit.experiments.availability.probing import (
    QuorumProber,
    brokers_of,
    lab_brokers,
    quorum_up,
)
from labkit.experiments.availability.runner import (
    AvailabilityRun,
    first_through,
    kill_and_recover,
    kill_order,
    run_availability,
    run_topology,
    save,
)
from labkit.experiments.prober import PATH_SERVICES

__all__ = [
    "BROKER", "BUDGET_S", "PATH_SERVICES", "QUORUM_PROBE", "SCALES", "TOPOLOGIES", "UPTIME_TARGET", "AvailabilityRun",
    "AvailabilityScale", "QuorumProber", "TopologyRun", "brokers_of", "downtime_plot", "faults_per_budget",
    "first_through", "kill_and_recover", "kill_order", "lab_brokers", "latency_effect", "longest_gap_s",
    "outage_downtime", "per_fault", "quorum_up", "replicated_lab", "run_availability", "run_topology", "save",
    "scale_of", "scratch_offset", "timeline_plot", "uptime_verdicts",
]
