"""The message broker: Apache Kafka 3.9 in KRaft mode, one node or a replicated cluster of three.

``LABKIT_KAFKA_BROKERS`` picks the topology. With 1 (the default) the service ``kafka`` is the
whole of Kafka, broker and KRaft controller in one process. With 3 the brokers are three
processes and three services, ``kafka``, ``kafka-2`` and ``kafka-3``, and the KRaft quorum is
three more, ``kafka-controller``, ``kafka-2-controller`` and ``kafka-3-controller``: each can be
stopped, killed or paused on its own, and a broker's death never takes the active controller
with it (which would add an election to its fencing, docs/reliability.md). The topics then
live on all three brokers (replication factor 3) and a write is acknowledged once two hold it
(``min.insync.replicas`` 2, acks=all): any one broker may fail without losing a record or
refusing a write, and any one controller without stopping a failover.

The store reaches each broker through a Toxiproxy hop of its own: ``store-kafka`` (broker 1,
the store's bootstrap; the declared hop), ``store-kafka-2`` and ``store-kafka-3``. A network
fault on ``store-kafka`` applies to all three (:mod:`labkit.experiments.faults.network`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import shutil
import subprocess
import uuid
from pathlib import Path

from labkit.core.files import atomic_write
from labkit.errors import LabConfigError, ServiceError
from labkit.stack.clients.kafka_admin import MIN_INSYNC, ensure_topics
from labkit.stack.install import InstallStep, MavenJars
from labkit.stack.process import SERVICE_UMASK
from labkit.stack.readiness import AllReady, LogReady, PortReady, Readiness
from labkit.stack.services.base import Service
from labkit.stack.services.declarations import (
    ComposeEntry,
    Hop,
    RemoteEndpoint,
    hop_address,
    hop_port_name,
)
from labkit.stack.services.toxiproxy import ToxiproxyClient
from labkit.stack.versions import STACK_DIR, pin

# Topics the pipeline needs before versitygw starts: its Kafka writer does not
# create topics, and its start-up test event fails on a missing one.
TOPICS = ("dit247", "dit247-dlq")
# C1 only (TieredStopAtLevel=1): the broker starts on a fraction of the CPU that C2 would spend
# compiling, which decides how fast it is back after a crash on a loaded 2-core machine; a
# lab's few messages a second never need C2's code. A 256 MB heap holds a lab's load with room
# to spare; three brokers of a class's many labs must fit too (docs/reliability.md, footprint).
JVM_OPTS = ["-Xms64m", "-Xmx256m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true"]

# The replicated topology's size (LABKIT_KAFKA_BROKERS=3); its write quorum is MIN_INSYNC.
REPLICATED = 3
# Broker n listens on broker 1's ports + BROKER_PORT_STEP * (n - 1).
BROKER_PORT_STEP = 100
FIRST_BROKER_PORTS = {"kafka": 9092, "kafka-controller": 9093, "kafka-proxied": 9094}
# The proxies of the store's hops to brokers 2 and 3 (broker 1's is the declared hop store-kafka).
REPLICA_HOP_PORTS = {2: 8486, 3: 8487}
# How long a silent broker keeps its registration (and its place in the in-sync replicas that an
# acks=all write waits for): after 2 s without a heartbeat (sent every 0.5 s) the controller
# fences it and its partitions get new leaders.
SESSION_MS = 2000
# The replicated cluster's controllers are nodes 101-103 (the brokers are 1-3).
CONTROLLER_ID_BASE = 100
# A controller keeps the cluster's metadata only: a small heap is plenty.
CONTROLLER_HEAP = ("-Xms32m", "-Xmx96m")
# What the cluster was made as: later starts refuse another topology (see Kafka.prepare).
TOPOLOGY_FILE = "cluster.json"


def broker_name(node_id: int) -> str:
    """``kafka`` for broker 1, ``kafka-2`` and ``kafka-3`` for the others (service names)."""
    return "kafka" if node_id == 1 else f"kafka-{node_id}"


def controller_name(node_id: int) -> str:
    """``kafka-controller``, ``kafka-2-controller``, ...: the replicated cluster's controllers,
    named after their listener (broker ``n``'s controller port in the one-node topology)."""
    return f"{broker_name(node_id)}-controller"


def store_hop(node_id: int) -> str:
    """The hop from the store to broker ``node_id``: ``store-kafka``, ``store-kafka-2``, ..."""
    return "store-kafka" if node_id == 1 else f"store-kafka-{node_id}"


def broker_ports(node_id: int) -> dict[str, int]:
    """Listener name -> default port of broker ``node_id`` (``kafka-2-controller`` -> 9193)."""
    return {name.replace("kafka", broker_name(node_id), 1): port + BROKER_PORT_STEP * (node_id - 1)
            for name, port in FIRST_BROKER_PORTS.items()}


# The services the replicated topology adds to broker 1's: the other brokers, and the controllers.
BROKER_REPLICAS: tuple[str, ...] = tuple(broker_name(n) for n in range(2, REPLICATED + 1))
CONTROLLERS: tuple[str, ...] = tuple(controller_name(n) for n in range(1, REPLICATED + 1))
REPLICAS: tuple[str, ...] = BROKER_REPLICAS + CONTROLLERS
_REPLICA_LISTENERS = {**{p: n for i in range(2, REPLICATED + 1) for p, n in broker_ports(i).items()},
                      **{hop_port_name(store_hop(i)): port for i, port in REPLICA_HOP_PORTS.items()}}


def broker_ids(config) -> range:
    """The node ids of the lab's brokers (1, or 1-3)."""
    return range(1, config.kafka_brokers + 1)


def kafka_bootstrap(config) -> str:
    """``host:port,...`` of every broker of the lab: what its Kafka clients bootstrap from."""
    return ",".join(f"{config.host}:{config.port(broker_name(n))}" for n in broker_ids(config))


class Kafka(Service):
    name = "kafka"
    start_order = 30
    # kafka-proxied is a second client listener, for clients that come through the store-kafka hop.
    default_ports = dict(FIRST_BROKER_PORTS)
    pin_key = "kafka"
    runtime_tools = ("java",)
    on_image_path = True
    # Kafka clients reconnect to the broker's advertised address, so the broker
    # advertises this proxy on a listener of its own (kafka-proxied).
    hops = (Hop("store-kafka", 8482, upstream="kafka-proxied", description="the store's events to Kafka"),)
    remote = RemoteEndpoint("remote_kafka_bootstrap", "host:port[,host:port...] of the brokers", probe="bootstrap")
    # Containers use the INTERNAL listener; the controller, the proxied listener and the
    # replicated topology (native only) stay inside.
    compose = ComposeEntry(endpoint="kafka:19092",
                           unpublished=("kafka-controller", "kafka-proxied", *_REPLICA_LISTENERS))
    hint = "a broker that will not start after a crash may have a damaged log dir; `labkit down --wipe` resets it"
    # Extra JVM options of this kind of node (the controllers' smaller heap).
    jvm_extra: tuple[str, ...] = ()

    def __init__(self, ctx, node_id: int = 1):
        super().__init__(ctx)
        self.node_id = node_id
        self.name = broker_name(node_id)

    @classmethod
    def listeners(cls) -> dict[str, int]:
        """Broker 1's ports, and those of brokers 2 and 3 and of their store hops, so that every
        lab's port table (and the test suite's port slots) has room for the replicated topology."""
        return {**cls.default_ports, **_REPLICA_LISTENERS}

    @classmethod
    def instances(cls, ctx) -> list[Service]:
        """The controllers and brokers of the lab's topology, and any other one still running (so
        that ``labkit down`` stops it after the topology setting changed)."""
        replicated = ctx.config.kafka_brokers == REPLICATED
        nodes = [*(KafkaController(ctx, n) for n in range(1, REPLICATED + 1)),
                 *(cls(ctx, n) for n in range(1, REPLICATED + 1))]
        return [n for n in nodes if n.wanted(replicated) or n.record() is not None]

    def wanted(self, replicated: bool) -> bool:
        """True when a lab of this topology runs this node."""
        return replicated or self.node_id == 1

    def install_step(self) -> InstallStep:
        p = pin("kafka")
        return MavenJars("kafka", p["version"], artifacts=(f"{p['maven']}:{p['version']}", p["logging"]))

    # -- facts of this broker ---------------------------------------------------
    @property
    def ports(self) -> dict[str, int]:
        """Its listeners: client, proxied, and the controller's when it is the controller too."""
        own = broker_ports(self.node_id)
        if self.dedicated_quorum:
            own.pop(controller_name(self.node_id))
        return {p: self.config.port(p) for p in own}

    @property
    def dedicated_quorum(self) -> bool:
        """True in the replicated topology, whose controllers are processes of their own."""
        return self.config.kafka_brokers == REPLICATED

    def _port(self, listener: str = "") -> int:
        """This broker's port of ``listener`` ("" for clients, ``controller``, ``proxied``)."""
        return self.config.port("-".join(filter(None, (self.name, listener))))

    @property
    def properties(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def topology_file(self) -> Path:
        return self.config.data_dir / broker_name(1) / TOPOLOGY_FILE

    def _java(self, main: str, *args: str, extra: tuple[str, ...] = ()) -> list[str]:
        lib = self.install_step().target(self.config.cache_dir) / "lib"
        return ["java", *JVM_OPTS, *self.jvm_extra, *extra, f"-Dlog4j.configuration=file:{STACK_DIR / 'kafka' / 'log4j.properties'}",
                "-cp", f"{lib}/*", main, *args]

    @property
    def class_archive(self) -> Path:
        """The brokers' class-data-sharing archive, in the cache: one per Kafka build and JDK."""
        return self.install_step().target(self.config.cache_dir) / "cds" / f"broker-{_jdk_key()}.jsa"

    # -- start ----------------------------------------------------------------
    def prepare(self) -> None:
        self._check_topology()
        atomic_write(self.properties, self.render_properties())
        self._ensure_store_hop()
        if not (self.log_dir / "meta.properties").exists():
            self._format()

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def voters(self) -> str:
        """``controller.quorum.voters``: node 1 alone, or the replicated cluster's controllers."""
        if not self.dedicated_quorum:
            return f"1@{self.host}:{self.config.port(controller_name(1))}"
        return ",".join(f"{CONTROLLER_ID_BASE + n}@{self.host}:{self.config.port(controller_name(n))}"
                        for n in broker_ids(self.config))

    def render_properties(self) -> str:
        """The broker's config: ``server.properties``, and ``quorum.properties`` when it is also
        the controller."""
        brokers = self.config.kafka_brokers
        listeners = [f"PLAINTEXT://{self.host}:{self._port()}", f"PROXIED://{self.host}:{self._port('proxied')}"]
        if not self.dedicated_quorum:
            listeners.insert(1, f"CONTROLLER://{self.host}:{self._port('controller')}")
        text = _template("server.properties").format(
            roles="broker" if self.dedicated_quorum else "broker,controller", node_id=self.node_id,
            voters=self.voters(), listeners=",".join(listeners), host=self.host, port=self._port(),
            proxied_advertised=hop_address(self.config, store_hop(self.node_id)), log_dir=self.log_dir,
            replication=brokers, min_isr=min(MIN_INSYNC, brokers))
        return text if self.dedicated_quorum else text + _quorum()

    def _check_topology(self) -> None:
        """Refuse to start a broker of a topology other than the one the lab's Kafka was made as.

        Raises:
            LabConfigError: the setting changed on a lab that has data.
        """
        made = self._recorded_topology()
        wanted = self.config.kafka_brokers
        if made is not None and made != wanted:
            raise LabConfigError(
                f"This lab's Kafka was made with {made} broker(s) and LABKIT_KAFKA_BROKERS={wanted} asks for "
                f"{wanted}. Fix: set LABKIT_KAFKA_BROKERS={made} again, or run `labkit down --wipe` first "
                "(it deletes the lab's data, stored images included).")

    def _recorded_topology(self) -> int | None:
        if self.topology_file.exists():
            made = json.loads(self.topology_file.read_text())
            if made["brokers"] == REPLICATED and made.get("controllers") != "dedicated":
                raise LabConfigError("This lab's replicated Kafka was made by an older labkit, whose brokers were "
                                     "their own controllers. Fix: `labkit down --wipe` (it deletes the lab's data, "
                                     "stored images included), then start it again.")
            return int(made["brokers"])
        # A lab made before the topology was recorded has one broker's log dir, or nothing.
        return 1 if (self.config.data_dir / broker_name(1) / "logs" / "meta.properties").exists() else None

    def _cluster_id(self) -> str:
        """The cluster's id: made by the first broker formatted, shared by the others."""
        if self.topology_file.exists():
            return json.loads(self.topology_file.read_text())["cluster_id"]
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        atomic_write(self.topology_file, json.dumps({"brokers": self.config.kafka_brokers, "cluster_id": cluster_id,
                                                     "controllers": "dedicated"}))
        return cluster_id

    def _format(self) -> None:
        """Format KRaft storage once; later starts reuse it, so data survives ``down``/``up``."""
        result = subprocess.run(self._java("kafka.tools.StorageTool", "format", f"--cluster-id={self._cluster_id()}",
                                           "-c", str(self.properties)), capture_output=True, text=True,
                                umask=SERVICE_UMASK)
        if result.returncode != 0:
            raise ServiceError(f"Formatting Kafka's storage failed:\n{result.stdout[-1500:]}{result.stderr[-1500:]}")

    def _ensure_store_hop(self) -> None:
        """Brokers 2 and 3: the store's hop to this broker (Toxiproxy makes store-kafka itself)."""
        if self.node_id == 1:
            return
        client = ToxiproxyClient(f"http://{self.host}:{self.config.port('toxiproxy')}")
        hop = store_hop(self.node_id)
        client.ensure_proxy(hop, hop_address(self.config, hop), f"{self.host}:{self._port('proxied')}")

    def on_ready(self) -> None:
        self._ensure_store_hop()  # again: Toxiproxy may have restarted since
        ensure_topics(kafka_bootstrap(self.config), TOPICS, brokers=self.config.kafka_brokers,
                      timeout_s=self.config.ready_timeout_s)
        self._dump_class_archive()

    def command(self) -> list[str]:
        """The broker. Its classes come from the archive when there is one (AppCDS): loading and
        verifying them is most of a start's CPU, so a broker restarted after a crash on the loaded
        2-core machine serves again in about a third of the time (docs/reliability.md). Without
        one, the broker records what it loads, and :meth:`on_ready` writes the archive."""
        archive = self.class_archive
        extra = (f"-XX:SharedArchiveFile={archive}",) if archive.exists() else ("-XX:+RecordDynamicDumpInfo",)
        return self._java("kafka.Kafka", str(self.properties), extra=extra)

    def _dump_class_archive(self) -> None:
        """Write the archive from this running broker once (``jcmd VM.cds dynamic_dump``, JDK 17+),
        under a name of its own, then move it into place: labs that dump at once never share a
        half-written file. Best effort: without ``jcmd`` or when the dump fails, brokers start as before."""
        record = self.record()
        archive = self.class_archive
        if archive.exists() or record is None or not shutil.which("jcmd"):
            return
        if "-XX:+RecordDynamicDumpInfo" not in record.cmd:
            return
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_name(f".{archive.name}.{uuid.uuid4().hex[:8]}")
        try:
            done = subprocess.run(["jcmd", str(record.pid), "VM.cds", "dynamic_dump", str(partial)],
                                  capture_output=True, text=True, timeout=120)
            if done.returncode == 0 and partial.exists() and partial.stat().st_size > 0:
                partial.replace(archive)
        except (OSError, subprocess.SubprocessError):
            pass
        finally:
            partial.unlink(missing_ok=True)

    def readiness(self) -> Readiness:
        return AllReady((LogReady(self.log_path, r"Kafka Server started"), PortReady(self._port(), self.host)))

    def endpoint(self) -> str:
        """Broker 1: the bootstrap list of the whole cluster (what clients use); the others: their own."""
        return kafka_bootstrap(self.config) if self.node_id == 1 else f"{self.host}:{self._port()}"

    def data_paths(self) -> list[Path]:
        """Broker 1 also takes the other nodes' data, whatever the topology is now."""
        if self.node_id != 1:
            return [self.workdir]
        return [self.workdir, *(self.config.data_dir / name for name in REPLICAS)]


class KafkaController(Kafka):
    """One of the replicated cluster's three KRaft controllers (node ``100 + n``): no topics, no
    clients, no hop; only the cluster's metadata, its brokers' heartbeats and their fencing.

    It has no ``name`` of its own as a class, so the catalog does not take it for a service of
    its own: :meth:`Kafka.instances` makes the three of them."""

    name = None  # type: ignore[assignment]
    jvm_extra = CONTROLLER_HEAP

    def __init__(self, ctx, node_id: int = 1):
        super().__init__(ctx, node_id)
        self.name = controller_name(node_id)

    def wanted(self, replicated: bool) -> bool:
        return replicated

    @property
    def ports(self) -> dict[str, int]:
        return {self.name: self.config.port(self.name)}

    def render_properties(self) -> str:
        return _template("controller.properties").format(
            node_id=CONTROLLER_ID_BASE + self.node_id, voters=self.voters(), host=self.host, port=self._port(),
            log_dir=self.log_dir) + _quorum()

    def _ensure_store_hop(self) -> None:
        """A controller has no clients, so no hop."""

    def on_ready(self) -> None:
        """Nothing to provision: the topics are the brokers' (broker 1 makes them)."""

    def command(self) -> list[str]:
        """The controller, with the brokers' class archive when there is one (it never writes one)."""
        archive = self.class_archive
        extra = (f"-XX:SharedArchiveFile={archive}",) if archive.exists() else ()
        return self._java("kafka.Kafka", str(self.properties), extra=extra)

    def endpoint(self) -> str:
        return f"{self.host}:{self._port()}"

    def data_paths(self) -> list[Path]:
        return [self.workdir]


def _template(name: str) -> str:
    return (STACK_DIR / "kafka" / name).read_text()


def _quorum() -> str:
    """The controller's lines (stack/kafka/quorum.properties), filled in."""
    return "\n" + _template("quorum.properties").format(session_ms=SESSION_MS)


@functools.cache
def _jdk_key() -> str:
    """Names the JDK that runs the brokers (an archive is only valid for the JDK that wrote it)."""
    java = Path(shutil.which("java") or "java").resolve()
    stamp = f"{java}:{java.stat().st_mtime_ns if java.exists() else 0}"
    return hashlib.sha256(stamp.encode()).hexdigest()[:12]
