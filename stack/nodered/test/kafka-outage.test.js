'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { CONSUMER_RETRY, isConnectionLoss, Outage, describeReturn } =
    require('../nodes/labkit-kafka/outage');

// kafkajs' retry waits min(initialRetryTime * multiplier^n, maxRetryTime) (+/- 20 %) before retry n+1
const waits = r => Array.from({ length: r.retries }, (_v, n) =>
    Math.min(r.initialRetryTime * Math.pow(r.multiplier, n), r.maxRetryTime));

test('a lost broker is polled at most about a second apart', () => {
    assert.ok(Math.max(...waits(CONSUMER_RETRY)) * 1.2 <= 1200);
});

test('the same consumer outlasts a broker restart of 30 s before kafkajs gives up on it', () => {
    const total = waits(CONSUMER_RETRY).reduce((a, b) => a + b, 0);
    assert.ok(total * 0.8 >= 30000, 'retries cover only ' + total + ' ms');
});

test('kafkajs connection errors count as a lost broker, other errors do not', () => {
    for (const text of ['Connection error: connect ECONNREFUSED 127.0.0.1:9792', 'Connection error: read ECONNRESET',
        'Connection timeout', 'Closed connection', 'Connection closed by the server', 'Not connected']) {
        assert.ok(isConnectionLoss(text), text);
    }
    for (const text of ['The coordinator is not aware of this member', 'The group is rebalancing, so a rejoin is needed',
        '', undefined]) {
        assert.equal(isConnectionLoss(text), false, String(text));
    }
});

test('an outage starts at the first connection error and ends once, at the first return', () => {
    const outage = new Outage();
    assert.equal(outage.end('heartbeat', 1000), null);
    outage.noteError('The coordinator is loading and hence can\'t process requests for this group', 1000);
    assert.equal(outage.end('heartbeat', 1500), null);
    outage.noteError('Connection error: connect ECONNREFUSED 127.0.0.1:9792', 2000);
    outage.noteError('Connection error: connect ECONNREFUSED 127.0.0.1:9792', 5000);
    assert.deepEqual(outage.end('heartbeat', 9500), { how: 'heartbeat', lost_ms: 7500 });
    assert.equal(outage.end('heartbeat', 9600), null);
    outage.noteError('Connection timeout', 20000);
    assert.deepEqual(outage.end('join', 19000), { how: 'join', lost_ms: 0 });
});

test('the log line says how the consumer came back', () => {
    assert.equal(describeReturn({ how: 'heartbeat', lost_ms: 7549 }, 'dit247', 'nodered-pipeline'),
        'kafka consumer (dit247) reached the broker again after 7.5 s; still a member of group nodered-pipeline (no rejoin)');
    assert.equal(describeReturn({ how: 'join', lost_ms: 12000 }, 'dit247', 'g'),
        'kafka consumer (dit247) reached the broker again after 12.0 s; joined group g again');
});

test('a consumer of one broker rides out its restart; of several, it moves on within seconds', () => {
    const { consumerSettings, CONSUMER_RETRY } = require('../nodes/labkit-kafka/outage');
    assert.strictEqual(consumerSettings(1).retry, CONSUMER_RETRY);
    assert.strictEqual(consumerSettings(1).sessionTimeout, 10000);
    const cluster = consumerSettings(3);
    assert.ok(cluster.retry.retries < CONSUMER_RETRY.retries);
    // the cluster's consumer retries at most 0.5 s apart, and keeps trying for about 7 s
    assert.ok(waits(cluster.retry).every(w => w <= 500));
    const clusterTotal = waits(cluster.retry).reduce((a, b) => a + b, 0);
    assert.ok(clusterTotal * 0.8 >= 5000 && clusterTotal * 1.2 <= 10000, 'cluster retries cover ' + clusterTotal + ' ms');
    assert.ok(cluster.sessionTimeout < consumerSettings(1).sessionTimeout);
    assert.ok(cluster.heartbeatInterval * 3 <= cluster.sessionTimeout);
    // the cluster's consumer looks for a moved leader every second; one broker's every 3 s
    assert.strictEqual(cluster.metadataMaxAge, 1000);
    assert.ok(consumerSettings(1).metadataMaxAge > cluster.metadataMaxAge);
    // a fetch in flight holds up the move to a new leader: short in a cluster, 1 s with one broker
    assert.strictEqual(cluster.maxWaitTimeInMs, 250);
    assert.strictEqual(consumerSettings(1).maxWaitTimeInMs, 1000);
});
