/**
 * coordinator.js: in a cluster, a heartbeat that lost the group's coordinator asks for the new one
 * and carries on as the same member; with one broker, nothing changes.
 */
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { followCoordinator, isCoordinatorLoss } = require('../nodes/labkit-kafka/coordinator');

/** A group with kafkajs' fields whose coordinator refuses connections until `moved` is set. */
function groupClass() {
    class Group {
        constructor(brokers) {
            const group = this;
            this.groupId = 'g';
            this.memberId = 'm-1';
            this.found = 0;
            this.logger = { warn() {} };
            this.offsetManager = { coordinator: null };
            this.dead = { nodeId: 1 };
            this.live = { nodeId: 2 };
            this.coordinator = this.dead;
            this.cluster = {
                brokerPool: { metadata: { brokers: brokers.map(nodeId => ({ nodeId })) } },
                async findGroupCoordinator() {
                    group.found += 1;
                    return group.live;
                }
            };
        }
        async heartbeat() {
            if (this.coordinator === this.dead) {
                const err = new Error('Connection error: connect ECONNREFUSED 127.0.0.1:9092');
                err.name = 'KafkaJSConnectionError';
                throw err;
            }
            return 'beat';
        }
    }
    return Group;
}

test('a lost or moved coordinator is told from other errors', () => {
    assert.ok(isCoordinatorLoss({ name: 'KafkaJSConnectionError' }));
    assert.ok(isCoordinatorLoss({ name: 'KafkaJSNumberOfRetriesExceeded', cause: { name: 'KafkaJSConnectionClosedError' } }));
    assert.ok(isCoordinatorLoss({ name: 'KafkaJSProtocolError', type: 'NOT_COORDINATOR' }));
    assert.ok(!isCoordinatorLoss({ name: 'KafkaJSProtocolError', type: 'UNKNOWN_MEMBER_ID' }));
    assert.ok(!isCoordinatorLoss({ name: 'KafkaJSProtocolError', type: 'REBALANCE_IN_PROGRESS' }));
    assert.ok(!isCoordinatorLoss(null));
});

test('in a cluster the failed heartbeat finds the new coordinator and the next one reaches it as the same member', async () => {
    const Group = groupClass();
    assert.equal(followCoordinator(Group), true);
    assert.equal(followCoordinator(Group), true, 'wrapped once only');
    const group = new Group([1, 2, 3]);
    await assert.rejects(group.heartbeat({ interval: 0 }), { name: 'KafkaJSConnectionError' });
    assert.equal(group.found, 1);
    assert.equal(group.coordinator, group.live);
    assert.equal(group.offsetManager.coordinator, group.live, 'offsets are committed to it too');
    assert.equal(await group.heartbeat({ interval: 0 }), 'beat');
    assert.equal(group.memberId, 'm-1');
});

test('with one broker the heartbeat fails as before, with no look-up', async () => {
    const Group = groupClass();
    followCoordinator(Group);
    const group = new Group([1]);
    await assert.rejects(group.heartbeat({ interval: 0 }), { name: 'KafkaJSConnectionError' });
    assert.equal(group.found, 0);
    assert.equal(group.coordinator, group.dead);
});

test('a class without heartbeat is left alone', () => {
    assert.equal(followCoordinator(class {}), false);
    assert.equal(followCoordinator(undefined), false);
});
