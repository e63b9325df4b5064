"""The message broker: Apache Kafka 3.9, one node in KRaft mode."""

from __future__ import annotations

import base64
import subprocess
import uuid

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from labkit.core.files import atomic_write
from labkit.errors import ServiceError
from labkit.stack.install import InstallStep, MavenJars
from labkit.stack.process import SERVICE_UMASK
from labkit.stack.readiness import AllReady, LogReady, PortReady, Readiness
from labkit.stack.services.base import Service
from labkit.stack.services.declarations import (
    ComposeEntry,
    Hop,
    RemoteEndpoint,
    hop_address,
)
from labkit.stack.versions import STACK_DIR, pin

# Topics the pipeline needs before versitygw starts: its Kafka writer does not
# create topics, and its start-up test event fails on a missing one.
TOPICS = ("dit247", "dit247-dlq")
# C1 only (TieredStopAtLevel=1): the broker starts on a fraction of the CPU that C2 would spend
# compiling, which decides how fast it is back after a crash on a loaded 2-core machine; a
# lab's few messages a second never need C2's code.
JVM_OPTS = ["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true"]


class Kafka(Service):
    name = "kafka"
    start_order = 30
    # kafka-proxied is a second client listener, for clients that come through the store-kafka hop.
    default_ports = {"kafka": 9092, "kafka-controller": 9093, "kafka-proxied": 9094}
    pin_key = "kafka"
    runtime_tools = ("java",)
    on_image_path = True
    # Kafka clients reconnect to the broker's advertised address, so the broker
    # advertises this proxy on a listener of its own (kafka-proxied).
    hops = (Hop("store-kafka", 8482, upstream="kafka-proxied", description="the store's events to Kafka"),)
    remote = RemoteEndpoint("remote_kafka_bootstrap", "host:port[,host:port...] of the brokers", probe="bootstrap")
    # Containers use the INTERNAL listener; the controller and the proxied listener stay inside.
    compose = ComposeEntry(endpoint="kafka:19092", unpublished=("kafka-controller", "kafka-proxied"))
    hint = "a broker that will not start after a crash may have a damaged log dir; `labkit down --wipe` resets it"

    def install_step(self) -> InstallStep:
        p = pin("kafka")
        return MavenJars("kafka", p["version"], artifacts=(f"{p['maven']}:{p['version']}", p["logging"]))

    @property
    def properties(self):
        return self.workdir / "server.properties"

    def _java(self, main: str, *args: str) -> list[str]:
        lib = self.install_step().target(self.config.cache_dir) / "lib"
        return ["java", *JVM_OPTS, f"-Dlog4j.configuration=file:{STACK_DIR / 'kafka' / 'log4j.properties'}",
                "-cp", f"{lib}/*", main, *args]

    def prepare(self) -> None:
        log_dir = self.workdir / "logs"
        template = (STACK_DIR / "kafka" / "server.properties").read_text()
        atomic_write(self.properties, template.format(
            host=self.host, port=self.ports["kafka"], controller_port=self.ports["kafka-controller"],
            proxied_port=self.ports["kafka-proxied"], proxied_advertised=hop_address(self.config, "store-kafka"),
            log_dir=log_dir))
        if not (log_dir / "meta.properties").exists():
            self._format()

    def _format(self) -> None:
        """Format KRaft storage once; later starts reuse it, so data survives ``down``/``up``."""
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                                           "-c", str(self.properties)), capture_output=True, text=True,
                                umask=SERVICE_UMASK)
        if result.returncode != 0:
            raise ServiceError(f"Formatting Kafka's storage failed:\n{result.stdout[-1500:]}{result.stderr[-1500:]}")

    def on_ready(self) -> None:
        ensure_topics(self.endpoint(), TOPICS)

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.properties))

    def readiness(self) -> Readiness:
        return AllReady((LogReady(self.log_path, r"Kafka Server started"), PortReady(self.ports["kafka"], self.host)))

    def endpoint(self) -> str:
        return f"{self.host}:{self.ports['kafka']}"


def ensure_topics(bootstrap: str, topics: tuple[str, ...], partitions: int = 1) -> None:
    """Create the topics that do not exist yet (idempotent).

    Raises:
        ServiceError: the broker did not answer, or refused.
    """
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="labkit-admin", request_timeout_ms=10000)
    except KafkaError as e:
        raise ServiceError(f"Kafka at {bootstrap} did not answer ({e}). Hint: `labkit logs kafka`.") from e
    try:
        missing = set(topics) - set(admin.list_topics())
        if missing:
            admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in sorted(missing)])
    except TopicAlreadyExistsError:
        pass  # another client created it meanwhile
    except KafkaError as e:
        raise ServiceError(f"Kafka at {bootstrap} refused to create topics {', '.join(topics)}: {e}. "
                           "Hint: `labkit logs kafka`.") from e
    finally:
        admin.close()
