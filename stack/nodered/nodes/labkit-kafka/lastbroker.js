/**
 * The consumer's only broker, kept through its crash (one broker, the default topology).
 *
 * When a broker's death closes a connection while a fetch is in flight, kafkajs 2.2.4 removes
 * that broker from its pool (ConsumerGroup.recoverFromFetch on KafkaJSConnectionClosedError). In
 * a cluster the others remain; with one broker the pool is then empty, the next call fails with
 * "No broker available", and kafkajs crashes and restarts the consumer. The new consumer joins as
 * a new member, and its join waits until the group has dropped the old one (its 10 s session):
 * the fault matrix's kill-kafka took 11.2 s that way against 4.8-5.0 s without
 * (docs/reliability.md).
 *
 * keepLastBroker makes recoverFromFetch keep the last broker: the error goes on to the runner's
 * retry instead, which polls the broker at most 1 s apart (outage.js, CONSUMER_RETRY) and reaches
 * the restarted broker as the same member. With several brokers nothing changes.
 */
'use strict';

const { severalBrokers } = require('./coordinator');
const { wrapOnce } = require('./wrap');

/**
 * Wrap `ConsumerGroup.prototype.recoverFromFetch` (kafkajs' src/consumer/consumerGroup); once only.
 *
 * @returns true when the method is (now) wrapped, false when the class does not have it
 */
function keepLastBroker(ConsumerGroup) {
    return wrapOnce(ConsumerGroup, 'recoverFromFetch', recover => async function recoverKeepingLastBroker(e) {
        if (e && e.name === 'KafkaJSConnectionClosedError' && !severalBrokers(this)) {
            throw e; // to the runner's retry, with the broker still in the pool
        }
        return recover.call(this, e);
    });
}

module.exports = { keepLastBroker };
