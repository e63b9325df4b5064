/**
 * node-red-contrib-labkit-kafka
 *
 * Three node types built on kafkajs:
 *   labkit-kafka-broker  config node: comma separated broker list (+ client id)
 *   labkit-kafka-in      consumer group member, emits one msg per Kafka record
 *   labkit-kafka-out     producer, msg.payload -> record value, msg.key -> record key
 *
 * Flow control of labkit-kafka-in ("maxInFlight"):
 *   0 (default) - fire and forget: every record is emitted as soon as kafkajs
 *                 hands it over; the offset is committed once emitted.
 *   N > 0       - at most N emitted records may be un-acknowledged. While N are
 *                 outstanding the consumer stops taking records (eachMessage
 *                 waits, heart-beating so the group session stays alive).
 *                 A record is acknowledged by sending a msg back into the
 *                 node's input that still carries its `msg.kafka`
 *                 (topic/partition/offset), or a `msg.kafkaAck` object with the
 *                 same fields. Records that are never acknowledged are released
 *                 after "ackTimeout" seconds (with a warning) so a broken flow
 *                 cannot stall the consumer forever.
 *   This is back-pressure only, not a delivery guarantee: offsets are committed
 *   when a record is handed to the flow (at-most-once from the flow's view).
 *
 * Partitions at once ("partitionsConcurrently"): how many of its assigned
 * partitions the member hands records from at the same time (kafkajs'
 * partitionsConsumedConcurrently). Empty in the node means the flow's env
 * KAFKA_PARTITIONS_CONCURRENTLY, else 1. The maxInFlight bound is shared by all.
 *
 * Robustness: kafkajs retries with exponential backoff; the consumer polls a lost broker
 * at most 1 s apart (outage.js says why), and logs how it came back after an outage.
 * If the consumer crashes
 * and kafkajs decides not to restart it (or connect/subscribe fails), the node
 * tears the consumer down and starts a new one with its own capped backoff.
 * Broker errors are logged as warnings and shown in the node status; they are
 * never thrown out of the node (Node-RED keeps running).
 */
'use strict';

module.exports = function (RED) {
    const { Kafka, logLevel, Partitioners } = require('kafkajs');
    const { METADATA_MAX_AGE_MS, consumerSettings, Outage, describeReturn } = require('./outage');
    const { followCoordinator } = require('./coordinator');
    const { keepLastBroker } = require('./lastbroker');

    // In a replicated Kafka, a heartbeat that lost the group's coordinator looks for the new one
    // (coordinator.js); the same kafkajs module as require('kafkajs') above.
    if (!followCoordinator(require('kafkajs/src/consumer/consumerGroup'))) {
        RED.log.warn('labkit-kafka: kafkajs has no ConsumerGroup.heartbeat to wrap; a dead coordinator costs a restart');
    }
    // With one broker, a fetch cut by the broker's death keeps that broker (lastbroker.js).
    if (!keepLastBroker(require('kafkajs/src/consumer/consumerGroup'))) {
        RED.log.warn('labkit-kafka: kafkajs has no ConsumerGroup.recoverFromFetch to wrap; a broker crash may cost a rejoin');
    }

    const CLOSE_TIMEOUT_MS = 10000;

    /** Substitute ${VAR} left in a string (Node-RED normally already did it). */
    function substituteEnv(value, node) {
        if (value === undefined || value === null) {
            return '';
        }
        return String(value).replace(/\$\{([A-Za-z0-9_]+)\}/g, function (_m, name) {
            let v;
            try {
                v = node ? RED.util.getSetting(node, name) : undefined;
            } catch (e) {
                v = undefined;
            }
            if (v === undefined || v === null) {
                v = process.env[name];
            }
            return v === undefined || v === null ? '' : String(v);
        });
    }

    function parseBrokers(value, node) {
        return substituteEnv(value, node)
            .split(',')
            .map(function (s) { return s.trim(); })
            .filter(function (s) { return s.length > 0; });
    }

    const REPEAT_WINDOW_MS = 30000;

    /**
     * kafkajs log lines -> Node-RED log of the owning node.
     * kafkajs ERROR -> node.warn, WARN -> node.log, below -> node.debug. An
     * identical line repeated within 30 s is suppressed (a broker outage would
     * otherwise flood the log and the debug sidebar). `onError` is told about
     * every ERROR line (used to show "broker unreachable" in the node status).
     */
    function makeLogCreator(owner, onError) {
        const lastSeen = new Map(); // text -> {at, suppressed}
        return function () {
            return function (entry) {
                const log = entry.log || {};
                let text = '[kafkajs] ' + (entry.namespace ? entry.namespace + ': ' : '') + log.message;
                if (log.error && log.error !== log.message) {
                    text += ' (' + log.error + ')';
                }
                try {
                    if (entry.level <= logLevel.ERROR && onError) {
                        onError(log.error || log.message);
                    }
                    if (entry.level <= logLevel.WARN) {
                        const now = Date.now();
                        const key = text;
                        const seen = lastSeen.get(key);
                        if (seen && now - seen.at < REPEAT_WINDOW_MS) {
                            seen.suppressed++;
                            return;
                        }
                        if (seen && seen.suppressed > 0) {
                            text += ' [repeated ' + seen.suppressed + ' more times]';
                        }
                        lastSeen.set(key, { at: now, suppressed: 0 });
                        if (lastSeen.size > 200) {
                            lastSeen.clear();
                        }
                    }
                    if (entry.level <= logLevel.ERROR) {
                        owner.warn(text);
                    } else if (entry.level === logLevel.WARN) {
                        owner.log(text);
                    } else {
                        owner.debug(text);
                    }
                } catch (e) {
                    // logging must never break the consumer
                }
            };
        };
    }

    function errText(err) {
        if (!err) {
            return 'unknown error';
        }
        return (err.name ? err.name + ': ' : '') + (err.message || String(err));
    }

    function withTimeout(promise, ms) {
        let timer;
        return Promise.race([
            Promise.resolve(promise).finally(function () { clearTimeout(timer); }),
            new Promise(function (_resolve, reject) {
                timer = setTimeout(function () { reject(new Error('timed out after ' + ms + ' ms')); }, ms);
            })
        ]);
    }

    // ------------------------------------------------------------------ broker
    function KafkaBrokerNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        node.brokers = parseBrokers(config.brokers, node);
        node.clientId = substituteEnv(config.clientId, node).trim() || 'labkit-nodered';

        /**
         * A new kafkajs client whose log lines are attributed to `owner`;
         * `onError(text)` is called for every kafkajs error log line; `retry` replaces the
         * client's default retry (used by the consumer).
         */
        node.createClient = function (owner, onError, retry) {
            if (node.brokers.length === 0) {
                throw new Error('no Kafka brokers configured (brokers field is empty after ${ENV} substitution)');
            }
            return new Kafka({
                clientId: node.clientId,
                brokers: node.brokers,
                connectionTimeout: 3000,
                requestTimeout: 30000,
                // a lab broker restart should be noticed within ~10 s
                retry: retry || {
                    initialRetryTime: 300,
                    maxRetryTime: 10000,
                    multiplier: 2,
                    retries: 8
                },
                logLevel: logLevel.WARN,
                logCreator: makeLogCreator(owner || node, onError)
            });
        };
    }
    RED.nodes.registerType('labkit-kafka-broker', KafkaBrokerNode);

    // ---------------------------------------------------------------- consumer
    function KafkaInNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;

        node.broker = RED.nodes.getNode(config.broker);
        node.topic = substituteEnv(config.topic, node).trim();
        node.groupId = substituteEnv(config.groupId, node).trim() || ('labkit-nodered-' + node.id);
        node.fromBeginning = config.fromBeginning === true || config.fromBeginning === 'true';
        const mif = parseInt(config.maxInFlight, 10);
        node.maxInFlight = Number.isFinite(mif) && mif > 0 ? mif : 0;
        const ackS = Number(config.ackTimeout);
        node.ackTimeoutMs = (Number.isFinite(ackS) && ackS > 0 ? ackS : 60) * 1000;
        const pcc = parseInt(substituteEnv(config.partitionsConcurrently, node).trim() ||
            substituteEnv('${KAFKA_PARTITIONS_CONCURRENTLY}', node), 10);
        node.partitionsConcurrently = Number.isFinite(pcc) && pcc > 0 ? Math.min(pcc, 64) : 1;

        let closing = false;
        let consumer = null;
        let generation = 0;
        let attempt = 0;
        let retryTimer = null;
        let connected = false;
        const outage = new Outage(); // spans consumer restarts: a crash is part of the outage
        const inflight = new Map(); // ack key -> expiry timer
        let waiters = [];

        function setStatus(fill, shape, text) {
            node.status({ fill: fill, shape: shape, text: text });
        }

        function showConnected() {
            if (node.maxInFlight > 0) {
                const full = inflight.size >= node.maxInFlight;
                setStatus(full ? 'yellow' : 'green', 'dot',
                    (full ? 'paused ' : 'connected ') + inflight.size + '/' + node.maxInFlight + ' in flight');
            } else {
                setStatus('green', 'dot', 'connected');
            }
        }

        if (!node.broker) {
            setStatus('red', 'ring', 'no broker config');
            node.error('labkit-kafka-in: no broker configuration selected');
            return;
        }
        if (!node.topic) {
            setStatus('red', 'ring', 'no topic');
            node.error('labkit-kafka-in: no topic configured');
            return;
        }

        function ackKey(topic, partition, offset) {
            return topic + '/' + partition + '/' + offset;
        }

        function wakeOne() {
            const w = waiters.shift();
            if (w) {
                w();
            }
        }

        function wakeAll() {
            const ws = waiters;
            waiters = [];
            ws.forEach(function (w) { w(); });
        }

        function release(key) {
            const t = inflight.get(key);
            if (t === undefined) {
                return false;
            }
            clearTimeout(t);
            inflight.delete(key);
            if (connected && !closing) {
                showConnected();
            }
            wakeOne();
            return true;
        }

        async function acquireSlot(key, heartbeat) {
            if (node.maxInFlight <= 0) {
                return;
            }
            while (inflight.size >= node.maxInFlight) {
                if (closing) {
                    throw new Error('node is closing');
                }
                if (connected) {
                    showConnected();
                }
                await new Promise(function (resolve) {
                    const t = setTimeout(done, 3000);
                    function done() {
                        clearTimeout(t);
                        waiters = waiters.filter(function (w) { return w !== done; });
                        resolve();
                    }
                    waiters.push(done);
                });
                if (closing) {
                    throw new Error('node is closing');
                }
                // keep the group session alive while we hold the partition
                await heartbeat();
            }
            if (inflight.has(key)) {
                clearTimeout(inflight.get(key));
            }
            inflight.set(key, setTimeout(function () {
                if (inflight.has(key)) {
                    node.warn('no ack for ' + key + ' within ' + (node.ackTimeoutMs / 1000) + ' s; releasing its slot');
                    release(key);
                }
            }, node.ackTimeoutMs));
            if (connected) {
                showConnected();
            }
        }

        async function eachMessage(payload) {
            const message = payload.message;
            const key = ackKey(payload.topic, payload.partition, message.offset);
            await acquireSlot(key, payload.heartbeat);
            if (closing) {
                throw new Error('node is closing');
            }
            const headers = {};
            if (message.headers) {
                Object.keys(message.headers).forEach(function (h) {
                    const v = message.headers[h];
                    headers[h] = Buffer.isBuffer(v) ? v.toString('utf8') :
                        Array.isArray(v) ? v.map(function (x) { return Buffer.isBuffer(x) ? x.toString('utf8') : x; }) : v;
                });
            }
            node.send({
                topic: payload.topic,
                payload: message.value === null || message.value === undefined ? null : message.value.toString('utf8'),
                kafka: {
                    topic: payload.topic,
                    partition: payload.partition,
                    offset: message.offset,
                    timestamp: message.timestamp,
                    key: message.key === null || message.key === undefined ? null : message.key.toString('utf8'),
                    headers: headers
                }
            });
        }

        async function stopConsumer(c) {
            if (!c) {
                return;
            }
            try {
                await withTimeout(c.disconnect(), CLOSE_TIMEOUT_MS);
            } catch (err) {
                node.warn('kafka consumer disconnect failed: ' + errText(err));
            }
        }

        async function scheduleRestart(gen, reason) {
            if (closing || gen !== generation) {
                return; // superseded or shutting down
            }
            generation++; // invalidate this consumer's handlers
            connected = false;
            const old = consumer;
            consumer = null;
            await stopConsumer(old);
            if (closing) {
                return;
            }
            const base = Math.min(30000, 1000 * Math.pow(2, attempt));
            const delay = Math.round(base * (0.8 + Math.random() * 0.4));
            attempt = Math.min(attempt + 1, 10);
            setStatus('red', 'ring', 'reconnecting in ' + Math.round(delay / 1000) + ' s');
            node.warn('kafka consumer (' + node.topic + '): ' + reason + '; reconnecting in ' + delay + ' ms');
            clearTimeout(retryTimer);
            retryTimer = setTimeout(function () {
                retryTimer = null;
                start();
            }, delay);
        }

        async function start() {
            if (closing) {
                return;
            }
            const gen = ++generation;
            setStatus('yellow', 'ring', 'connecting');
            let c;
            let degraded = false;
            function onKafkaError(text) {
                // kafkajs is retrying on its own; show it instead of a stale "connected"
                if (gen !== generation || closing) {
                    return;
                }
                outage.noteError(text, Date.now());
                degraded = true;
                setStatus('yellow', 'ring', 'retrying: ' + String(text).slice(0, 60));
            }
            function noteReturn(how) {
                const ended = outage.end(how, Date.now());
                if (ended) {
                    node.log(describeReturn(ended, node.topic, node.groupId));
                }
                return ended !== null;
            }
            function onHealthy() {
                if (gen === generation && !closing && degraded && connected) {
                    degraded = false;
                    showConnected();
                }
            }
            // one broker: ride out its restart as the same member; several: move on (outage.js)
            const settings = consumerSettings(node.broker.brokers.length);
            try {
                c = node.broker.createClient(node, onKafkaError, Object.assign({}, settings.retry)).consumer({
                    groupId: node.groupId,
                    // after a broker restart the group waits for the lost member's
                    // session to expire before it re-forms, so this bounds recovery time
                    sessionTimeout: settings.sessionTimeout,
                    heartbeatInterval: settings.heartbeatInterval,
                    // a short long-poll: close, redeploy and a fetcher rebalance wait for the fetch
                    maxWaitTimeInMs: settings.maxWaitTimeInMs,
                    // a replicated Kafka's new leader is found within a second of the fencing
                    metadataMaxAge: settings.metadataMaxAge,
                    allowAutoTopicCreation: true,
                    retry: Object.assign({}, settings.retry)
                });
            } catch (err) {
                setStatus('red', 'ring', 'config error');
                node.error('kafka consumer: ' + errText(err));
                return;
            }
            consumer = c;
            c.on(c.events.GROUP_JOIN, function () {
                if (gen !== generation || closing) {
                    return;
                }
                if (!noteReturn('join') && (attempt > 0 || degraded)) {
                    node.log('kafka consumer (' + node.topic + ') joined group ' + node.groupId + ' again');
                }
                attempt = 0;
                connected = true;
                degraded = false;
                showConnected();
            });
            c.on(c.events.HEARTBEAT, function () {
                if (gen === generation && !closing) {
                    noteReturn('heartbeat');
                }
                onHealthy();
            });
            c.on(c.events.FETCH, onHealthy);
            c.on(c.events.CRASH, function (event) {
                if (gen !== generation || closing) {
                    return;
                }
                const p = event.payload || {};
                connected = false;
                setStatus('red', 'ring', p.restart ? 'error, retrying' : 'error');
                node.warn('kafka consumer crashed: ' + errText(p.error) + (p.restart ? ' (kafkajs restarts it)' : ''));
                if (!p.restart) {
                    scheduleRestart(gen, 'crashed without restart');
                }
            });
            c.on(c.events.STOP, function () {
                if (gen === generation && !closing) {
                    connected = false;
                }
            });
            try {
                await c.connect();
                if (closing || gen !== generation) {
                    await stopConsumer(c);
                    return;
                }
                await c.subscribe({ topics: [node.topic], fromBeginning: node.fromBeginning });
                if (closing || gen !== generation) {
                    await stopConsumer(c);
                    return;
                }
                await c.run({ partitionsConsumedConcurrently: node.partitionsConcurrently, eachMessage: eachMessage });
            } catch (err) {
                if (closing || gen !== generation) {
                    return;
                }
                connected = false;
                setStatus('red', 'ring', 'error');
                scheduleRestart(gen, 'start failed: ' + errText(err));
            }
        }

        node.on('input', function (msg, _send, done) {
            const ref = (msg.kafkaAck && typeof msg.kafkaAck === 'object') ? msg.kafkaAck : msg.kafka;
            if (ref && ref.partition !== undefined && ref.offset !== undefined) {
                const key = ackKey(ref.topic || msg.topic || node.topic, ref.partition, ref.offset);
                if (!release(key) && node.maxInFlight > 0) {
                    node.debug('ack for unknown or expired record ' + key);
                }
            }
            done();
        });

        node.on('close', function (_removed, done) {
            closing = true;
            generation++;
            connected = false;
            clearTimeout(retryTimer);
            retryTimer = null;
            inflight.forEach(function (t) { clearTimeout(t); });
            inflight.clear();
            wakeAll();
            const c = consumer;
            consumer = null;
            stopConsumer(c).finally(function () {
                node.status({});
                done();
            });
        });

        start();
    }
    RED.nodes.registerType('labkit-kafka-in', KafkaInNode);

    // ---------------------------------------------------------------- producer
    function KafkaOutNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        node.broker = RED.nodes.getNode(config.broker);
        node.topic = substituteEnv(config.topic, node).trim();

        if (!node.broker) {
            node.status({ fill: 'red', shape: 'ring', text: 'no broker config' });
            node.error('labkit-kafka-out: no broker configuration selected');
            return;
        }

        let producer = null;
        let connecting = null;
        let closing = false;

        try {
            producer = node.broker.createClient(node, function (text) {
                if (!closing) {
                    node.status({ fill: 'yellow', shape: 'ring', text: 'retrying: ' + String(text).slice(0, 60) });
                }
            }).producer({
                metadataMaxAge: METADATA_MAX_AGE_MS,
                allowAutoTopicCreation: true,
                createPartitioner: Partitioners.DefaultPartitioner,
                retry: { initialRetryTime: 300, maxRetryTime: 10000, retries: 5 }
            });
        } catch (err) {
            node.status({ fill: 'red', shape: 'ring', text: 'config error' });
            node.error('kafka producer: ' + errText(err));
            return;
        }
        producer.on(producer.events.DISCONNECT, function () {
            connecting = null;
            if (!closing) {
                node.status({ fill: 'grey', shape: 'ring', text: 'disconnected' });
            }
        });

        function ensureConnected() {
            if (!connecting) {
                node.status({ fill: 'yellow', shape: 'ring', text: 'connecting' });
                connecting = producer.connect().then(function () {
                    node.status({ fill: 'green', shape: 'dot', text: 'connected' });
                }, function (err) {
                    connecting = null;
                    node.status({ fill: 'red', shape: 'ring', text: 'error' });
                    throw err;
                });
            }
            return connecting;
        }

        function toValue(p) {
            if (p === null || p === undefined) {
                return null;
            }
            if (Buffer.isBuffer(p) || typeof p === 'string') {
                return p;
            }
            if (typeof p === 'object') {
                return JSON.stringify(p);
            }
            return String(p);
        }

        node.on('input', function (msg, _send, done) {
            const topic = node.topic || (typeof msg.topic === 'string' ? msg.topic : '');
            if (!topic) {
                done(new Error('labkit-kafka-out: no topic (set it on the node or in msg.topic)'));
                return;
            }
            const record = { value: toValue(msg.payload) };
            if (msg.key !== undefined && msg.key !== null) {
                record.key = Buffer.isBuffer(msg.key) ? msg.key : String(msg.key);
            }
            ensureConnected()
                .then(function () { return producer.send({ topic: topic, messages: [record] }); })
                .then(function () {
                    node.status({ fill: 'green', shape: 'dot', text: 'connected' });
                    done();
                }, function (err) {
                    node.status({ fill: 'red', shape: 'ring', text: 'send failed' });
                    done(new Error('kafka send to ' + topic + ' failed: ' + errText(err)));
                });
        });

        // connect eagerly so the status shows the broker state; errors only logged
        ensureConnected().catch(function (err) {
            node.warn('kafka producer connect failed (will retry on next message): ' + errText(err));
        });

        node.on('close', function (_removed, done) {
            closing = true;
            withTimeout(producer.disconnect(), CLOSE_TIMEOUT_MS)
                .catch(function (err) { node.warn('kafka producer disconnect failed: ' + errText(err)); })
                .finally(function () {
                    node.status({});
                    done();
                });
        });
    }
    RED.nodes.registerType('labkit-kafka-out', KafkaOutNode);
};
