/**
 * The group's coordinator after a broker's death, in a replicated Kafka.
 *
 * kafkajs 2.2.4 asks which broker coordinates the group only when it joins the group. When the
 * coordinator dies it keeps heart-beating (and committing offsets) to the dead broker until its
 * retries run out; then it restarts the consumer, which joins as a new member. The new
 * coordinator has loaded the group with the old member in it, and the join waits until that
 * member's session expires: a kill of the coordinator's broker stopped the pipeline for about
 * 10 s (docs/reliability.md, the replicated Kafka's timeline).
 *
 * followCoordinator makes a heartbeat that failed because the coordinator is gone ask the
 * cluster for the coordinator again, before the error goes on to kafkajs' retry. Once the
 * controller has moved the group's partition of __consumer_offsets to a live broker, the next
 * heartbeat reaches the new coordinator as the same member (same member id and generation): no
 * restart, no rejoin, no wait for a session to expire. Offset commits go to the same broker.
 * With a single broker there is no other coordinator to find, and nothing changes.
 */
'use strict';

const { wrapOnce } = require('./wrap');

// What a heartbeat fails with when its coordinator is gone or no longer the coordinator.
const LOST_CONNECTION = new Set(['KafkaJSConnectionError', 'KafkaJSConnectionClosedError',
    'KafkaJSRequestTimeoutError', 'KafkaJSBrokerNotFound']);
const MOVED = new Set(['NOT_COORDINATOR_FOR_GROUP', 'NOT_COORDINATOR', 'GROUP_COORDINATOR_NOT_AVAILABLE',
    'COORDINATOR_NOT_AVAILABLE', 'GROUP_LOAD_IN_PROGRESS', 'COORDINATOR_LOAD_IN_PROGRESS']);

/** True when `err` (a kafkajs error) says the group's coordinator is gone or has moved. */
function isCoordinatorLoss(err) {
    if (!err) {
        return false;
    }
    if (LOST_CONNECTION.has(err.name) || MOVED.has(err.type)) {
        return true;
    }
    const cause = err.cause || err.originalError;
    return cause && cause !== err ? isCoordinatorLoss(cause) : false;
}

/** True when the consumer group's client knows of more than one broker. */
function severalBrokers(group) {
    const pool = group.cluster && group.cluster.brokerPool;
    const metadata = pool && pool.metadata;
    return Boolean(metadata && Array.isArray(metadata.brokers) && metadata.brokers.length > 1);
}

/**
 * Wrap `ConsumerGroup.prototype.heartbeat` (kafkajs' src/consumer/consumerGroup); once only.
 *
 * @returns true when the method is (now) wrapped, false when the class does not have it
 */
function followCoordinator(ConsumerGroup) {
    const wrapped = wrapOnce(ConsumerGroup, 'heartbeat', heartbeat => async function heartbeatFollowing(args) {
        try {
            return await heartbeat.call(this, args);
        } catch (err) {
            if (this.memberId && isCoordinatorLoss(err) && severalBrokers(this)) {
                await this.findCoordinatorAgain();
            }
            throw err;
        }
    });
    if (wrapped) {
        ConsumerGroup.prototype.findCoordinatorAgain = findCoordinatorAgain;
    }
    return wrapped;
}

/** Ask the cluster which broker coordinates the group; keep the old one if none answers. */
async function findCoordinatorAgain() {
    try {
        const found = await this.cluster.findGroupCoordinator({ groupId: this.groupId });
        if (found && found !== this.coordinator) {
            this.logger.warn('The group coordinator moved; carrying on as the same member', {
                groupId: this.groupId, memberId: this.memberId, nodeId: found.nodeId
            });
        }
        this.coordinator = found;
        if (this.offsetManager) {
            this.offsetManager.coordinator = found;
        }
    } catch (e) {
        // no live coordinator yet: the heartbeat's own retry tries again
    }
}

module.exports = { followCoordinator, isCoordinatorLoss, severalBrokers };
