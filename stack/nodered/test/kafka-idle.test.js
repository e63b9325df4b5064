/**
 * kafka-idle.js: kafkajs' request queue arms its check timer only when a request waits or the
 * connection is throttled.
 */
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { steps } = require('./fixtures');

/** A queue with kafkajs' fields and a schedule method that counts its calls. */
function queueClass() {
    class Queue {
        constructor() {
            this.pending = [];
            this.throttledUntil = -1;
            this.scheduled = 0;
        }
        scheduleCheckPendingRequests() {
            this.scheduled += 1;
        }
    }
    return Queue;
}

test('an idle, unthrottled queue arms no timer', () => {
    const Queue = queueClass();
    assert.equal(steps.quietIdleChecks(Queue), true);
    const queue = new Queue();
    queue.scheduleCheckPendingRequests();
    assert.equal(queue.scheduled, 0);
});

test('a queue with a waiting request, or throttled, still schedules its check', () => {
    const Queue = queueClass();
    steps.quietIdleChecks(Queue);
    const waiting = new Queue();
    waiting.pending.push({ correlationId: 1 });
    waiting.scheduleCheckPendingRequests();
    assert.equal(waiting.scheduled, 1);
    const throttled = new Queue();
    throttled.throttledUntil = Date.now() + 60000;
    throttled.scheduleCheckPendingRequests();
    assert.equal(throttled.scheduled, 1);
});

test('wrapping twice wraps once, and a class without the method is left alone', () => {
    const Queue = queueClass();
    steps.quietIdleChecks(Queue);
    const once = Queue.prototype.scheduleCheckPendingRequests;
    assert.equal(steps.quietIdleChecks(Queue), true);
    assert.equal(Queue.prototype.scheduleCheckPendingRequests, once);
    assert.equal(steps.quietIdleChecks(class {}), false);
    assert.equal(steps.quietIdleChecks(undefined), false);
});
