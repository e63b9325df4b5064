"""Kafka's topics for the pipeline: made once, on one broker or on all three of the replicated
cluster, and usable on every broker before the services that write to them start
(:mod:`labkit.stack.services.kafka` calls :func:`ensure_topics` once the brokers are ready)."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownBrokerIdError
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

from labkit.errors import ServiceError

# A write is acknowledged once two replicas hold it (acks=all): one broker of three may fail.
MIN_INSYNC = 2
# The order in which the topics' replicas lead: broker 1 only when both others are out. versitygw
# takes one bootstrap address (broker 1's hop) and learns of a new leader only from it, so a
# leader that is never broker 1 keeps the store writing while broker 1 is down.
PREFERRED_REPLICAS = [2, 3, 1]


def ensure_topics(bootstrap: str, topics: tuple[str, ...], partitions: int = 1, brokers: int = 1,
                  timeout_s: float = 60.0) -> None:
    """Create the topics that do not exist yet (idempotent): on one broker, or on all of a
    cluster of ``brokers`` at ``min.insync.replicas`` 2, once every broker has registered.

    Raises:
        ServiceError: the broker did not answer, or refused.
    """
    admin = _admin(bootstrap)
    try:
        missing = set(topics) - set(admin.list_topics())
        if missing and brokers > 1:
            _wait_for_brokers(admin, brokers, timeout_s)
        if missing:
            # The request goes to the controller, which a client that met the cluster before
            # every broker had registered may not know yet (UnknownBrokerIdError): a fresh one does.
            Retrying(retry=retry_if_exception_type(UnknownBrokerIdError), stop=stop_after_delay(timeout_s),
                     wait=wait_fixed(0.5), reraise=True)(_create, bootstrap, sorted(missing), partitions, brokers)
        if brokers > 1:
            _wait_for_replicas(bootstrap, topics, brokers, timeout_s)
    except TopicAlreadyExistsError:
        pass  # another client created it meanwhile
    except KafkaError as e:
        raise ServiceError(f"Kafka at {bootstrap} refused to create topics {', '.join(topics)}: {e}. "
                           "Hint: `labkit logs kafka`.") from e
    finally:
        admin.close()


def _create(bootstrap: str, topics: list[str], partitions: int, brokers: int) -> None:
    admin = _admin(bootstrap)
    try:
        admin.create_topics([_new_topic(t, partitions, brokers) for t in topics])
    finally:
        admin.close()


def _admin(bootstrap: str) -> KafkaAdminClient:
    """Raises:
        ServiceError: no broker answered.
    """
    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="labkit-admin", request_timeout_ms=10000)
    except KafkaError as e:
        raise ServiceError(f"Kafka at {bootstrap} did not answer ({e}). Hint: `labkit logs kafka`.") from e


def _new_topic(topic: str, partitions: int, brokers: int) -> NewTopic:
    if brokers == 1:
        return NewTopic(topic, num_partitions=partitions, replication_factor=1)
    # Brokers 2 and 3 take turns to lead; broker 1 stays last everywhere (PREFERRED_REPLICAS).
    first, second, last = PREFERRED_REPLICAS
    assignment = {p: [first, second, last] if p % 2 == 0 else [second, first, last] for p in range(partitions)}
    return NewTopic(topic, replica_assignments=assignment, topic_configs={"min.insync.replicas": str(MIN_INSYNC)})


def _wait_for_brokers(admin: KafkaAdminClient, brokers: int, timeout_s: float) -> None:
    """Raises:
        ServiceError: fewer than ``brokers`` brokers registered within ``timeout_s``.
    """
    def registered() -> int:
        return len(admin.describe_cluster().get("brokers", []))

    try:
        Retrying(stop=stop_after_delay(timeout_s), wait=wait_fixed(0.5),
                 retry=retry_if_result(lambda n: n < brokers))(registered)
    except RetryError as e:
        raise ServiceError(f"Only {registered()} of Kafka's {brokers} brokers registered within {timeout_s:.0f} s. "
                           "Hint: `labkit logs kafka-2`, `labkit logs kafka-3`.") from e


def _wait_for_replicas(bootstrap: str, topics: tuple[str, ...], brokers: int, timeout_s: float) -> None:
    """Wait until every broker holds a replica of every partition of ``topics``.

    The controller answers a topic's creation before the brokers have applied it: a broker that
    has not yet refuses a write to it (UNKNOWN_TOPIC_OR_PARTITION), and the store, whose start
    writes a test event, then exits.

    Raises:
        ServiceError: some broker still held no replica after ``timeout_s``.
    """
    wanted = len(topics) * brokers  # one partition each (num.partitions=1)
    try:
        Retrying(stop=stop_after_delay(timeout_s), wait=wait_fixed(0.2),
                 retry=retry_if_result(lambda n: n < wanted))(_replicas_held, bootstrap, topics, brokers)
    except RetryError as e:
        raise ServiceError(f"Kafka's brokers held fewer than the {wanted} replicas of {', '.join(topics)} after "
                           f"{timeout_s:.0f} s. Hint: `labkit logs kafka-2`, `labkit logs kafka-3`.") from e


def _replicas_held(bootstrap: str, topics: tuple[str, ...], brokers: int) -> int:
    """How many (broker, topic, partition) replicas the brokers report in their log dirs; a fresh
    client each time, since one that met the cluster before a broker registered never asks it."""
    admin = _admin(bootstrap)
    try:
        dirs = admin.describe_log_dirs(list(topics), brokers=list(range(1, brokers + 1)))
    except UnknownBrokerIdError:
        return 0
    finally:
        admin.close()
    return len({(d["broker"], t["name"], p["partition_index"])
                for d in dirs for r in d.get("log_dirs", []) for t in r.get("topics", []) for p in t["partitions"]})
