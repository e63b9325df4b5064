/**
 * lastbroker.js: with one broker, a fetch cut by the broker's death keeps the broker in kafkajs'
 * pool and goes on to the runner's retry (the consumer stays the same member); in a cluster,
 * kafkajs' own recovery runs.
 */
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { keepLastBroker } = require('../nodes/labkit-kafka/lastbroker');

/** A group with kafkajs' fields whose own recoverFromFetch drops the broker, as kafkajs does. */
function groupClass() {
    class Group {
        constructor(brokers) {
            this.pool = brokers.map(nodeId => ({ nodeId }));
            this.cluster = { brokerPool: { metadata: { brokers: this.pool } } };
        }
        async recoverFromFetch(e) {
            if (e.name === 'KafkaJSConnectionClosedError') {
                this.pool.shift();
                return;
            }
            throw e;
        }
    }
    return Group;
}

function closed() {
    const err = new Error('Closed connection');
    err.name = 'KafkaJSConnectionClosedError';
    return err;
}

test('with one broker a closed connection keeps the broker and goes on to the retry', async () => {
    const Group = groupClass();
    assert.equal(keepLastBroker(Group), true);
    assert.equal(keepLastBroker(Group), true, 'wrapped once only');
    const group = new Group([1]);
    await assert.rejects(group.recoverFromFetch(closed()), { name: 'KafkaJSConnectionClosedError' });
    assert.equal(group.pool.length, 1, 'the only broker stays in the pool');
});

test('in a cluster kafkajs drops the dead broker as before', async () => {
    const Group = groupClass();
    keepLastBroker(Group);
    const group = new Group([1, 2, 3]);
    await group.recoverFromFetch(closed());
    assert.equal(group.pool.length, 2);
});

test('other errors take kafkajs\' own path', async () => {
    const Group = groupClass();
    keepLastBroker(Group);
    const other = new Error('offset out of range');
    other.name = 'KafkaJSOffsetOutOfRange';
    await assert.rejects(new Group([1]).recoverFromFetch(other), { name: 'KafkaJSOffsetOutOfRange' });
});

test('a class without recoverFromFetch is left alone', () => {
    assert.equal(keepLastBroker(class {}), false);
    assert.equal(keepLastBroker(undefined), false);
});
