/**
 * How the consumer rides out a broker outage, kept apart from the node so that it can be tested.
 *
 * CONSUMER_RETRY: kafkajs' retry for the consumer. A lost broker is polled at most 1 s apart,
 * so a restarted broker is reached within a second of serving again, while the coordinator
 * still holds the consumer's membership (it keeps it for the session timeout after loading
 * the group): the consumer carries on as the same member, with no rejoin and no rebalance.
 * The old cap (10 s) let the consumer reach the broker only after that membership had expired,
 * and a refused heartbeat made it join again. 40 retries keep the same consumer through about
 * 35 s of outage before kafkajs gives up and restarts it (as a new member).
 *
 * Outage: notes when the consumer lost the broker (the first kafkajs error line about the
 * connection) and, once a heartbeat is accepted again or the group is joined again, how long
 * that took and how the consumer came back.
 */
'use strict';

const CONSUMER_RETRY = Object.freeze({ initialRetryTime: 250, maxRetryTime: 1000, multiplier: 2, retries: 40 });

/*
 * METADATA_MAX_AGE_MS: how old kafkajs lets its view of the cluster (which broker leads which
 * partition) grow before it asks again; its default is 5 minutes. With a replicated Kafka, a dead
 * leader's partitions move to another broker, but kafkajs does not ask again on a connection
 * error: it kept fetching from the dead broker until CONSUMER_RETRY ran out (about 80 s), then
 * restarted the consumer. Asked every 3 s, it finds the new leader within seconds of the election.
 * The cluster's consumer asks every second (CLUSTER): the store writes to a new leader about 0.4 s
 * after the fencing, and at 3 s the consumer found it 2 s after the store (docs/reliability.md).
 */
const METADATA_MAX_AGE_MS = 3000;

/*
 * CLUSTER: the consumer's settings when it has several brokers (the replicated Kafka). Riding out
 * an outage as the same member (CONSUMER_RETRY) suits one broker, which comes back; in a cluster
 * the dead broker may have been the group's coordinator. kafkajs looks for a coordinator only when
 * it joins, so coordinator.js makes a heartbeat that lost it ask for the new one: the consumer
 * carries on as the same member once the controller has fenced the dead broker (a moved leader is
 * found by metadataMaxAge). Its retries are at most 0.5 s apart, so that it reaches the new
 * coordinator within half a second of the fencing (2 s after the kill; at 1 s apart it took
 * 1-2 s more), and 14 of them, about 7 s, leave room for a fencing delayed on a loaded machine;
 * after that kafkajs restarts the consumer as a new member, and its session is 4 s (the brokers
 * allow it: group.min.session.timeout.ms), so that the member it leaves behind is dropped, and
 * the group re-formed, that much sooner. A fetch long-polls a broker for at most 0.25 s (one
 * broker: 1 s): when a broker dies, kafkajs moves its fetchers to the new leaders only once every
 * fetch in flight has returned, and a 1 s long-poll to a live broker held that up by up to 1 s.
 */
const CLUSTER = Object.freeze({
    retry: Object.freeze({ initialRetryTime: 250, maxRetryTime: 500, multiplier: 2, retries: 14 }),
    sessionTimeout: 4000,
    heartbeatInterval: 1000,
    metadataMaxAge: 1000,
    maxWaitTimeInMs: 250
});
const SINGLE = Object.freeze({
    retry: CONSUMER_RETRY, sessionTimeout: 10000, heartbeatInterval: 3000, metadataMaxAge: METADATA_MAX_AGE_MS,
    maxWaitTimeInMs: 1000
});

/** The consumer's retry and session settings for a client of `brokers` brokers. */
function consumerSettings(brokers) {
    return brokers > 1 ? CLUSTER : SINGLE;
}

const CONNECTION_LOST = /Connection (error|timeout)|Connection closed|closed connection|ECONNREFUSED|ECONNRESET|Not connected|KafkaJSConnection/i;

/** True when a kafkajs error line says the broker connection is gone. */
function isConnectionLoss(text) {
    return CONNECTION_LOST.test(String(text || ''));
}

class Outage {
    constructor() {
        this.since = null; // epoch ms of the first connection loss, while it lasts
    }

    /** A kafkajs error line at `now`: starts an outage when it is about the connection. */
    noteError(text, now) {
        if (this.since === null && isConnectionLoss(text)) {
            this.since = now;
        }
    }

    /**
     * The consumer is back at `now`: `how` is 'heartbeat' (still the same group member) or
     * 'join' (it joined the group again). Returns null when no outage was open, else
     * `{ how, lost_ms }`, and closes the outage.
     */
    end(how, now) {
        if (this.since === null) {
            return null;
        }
        const lost_ms = Math.max(0, now - this.since);
        this.since = null;
        return { how: how, lost_ms: lost_ms };
    }
}

/** The Node-RED log line for an ended outage (see Outage.end). */
function describeReturn(ended, topic, groupId) {
    const s = (ended.lost_ms / 1000).toFixed(1);
    if (ended.how === 'heartbeat') {
        return 'kafka consumer (' + topic + ') reached the broker again after ' + s +
            ' s; still a member of group ' + groupId + ' (no rejoin)';
    }
    return 'kafka consumer (' + topic + ') reached the broker again after ' + s +
        ' s; joined group ' + groupId + ' again';
}

module.exports = { CONSUMER_RETRY, METADATA_MAX_AGE_MS, consumerSettings, isConnectionLoss, Outage, describeReturn };
