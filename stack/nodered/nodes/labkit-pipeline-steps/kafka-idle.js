/**
 * Node-RED's idle CPU: kafkajs 2.2.4 keeps a 1 ms timer running on every broker connection
 * while nothing is queued. Its RequestQueue re-arms `scheduleCheckPendingRequests` after every
 * check, with a negative delay when the connection is not throttled (kafkajs issues 1556 and
 * 1704; no release fixes it). An idle lab's Node-RED woke about 870 times a second and spent
 * 2-3 % of a core on it (docs/performance.md).
 *
 * quietIdleChecks makes the method arm no timer when there is nothing to check: no request
 * waits and the connection is not throttled. Nothing then waits for the missing timer: a
 * request that has to wait calls the method itself once it is queued, and every answer or
 * timeout checks the queue again.
 */
'use strict';

/**
 * Wrap `RequestQueue.prototype.scheduleCheckPendingRequests` (kafkajs'
 * src/network/requestQueue); once only.
 *
 * @returns true when the method is (now) wrapped, false when the class does not have it
 */
function quietIdleChecks(RequestQueue) {
    const proto = RequestQueue && RequestQueue.prototype;
    if (!proto || typeof proto.scheduleCheckPendingRequests !== 'function') {
        return false;
    }
    if (proto.scheduleCheckPendingRequests.quietWhenIdle) {
        return true;
    }
    const schedule = proto.scheduleCheckPendingRequests;
    function scheduleWhenNeeded() {
        const waiting = Array.isArray(this.pending) && this.pending.length > 0;
        if (!waiting && !(this.throttledUntil > Date.now())) {
            return undefined; // nothing queued, not throttled: no timer
        }
        return schedule.call(this);
    }
    scheduleWhenNeeded.quietWhenIdle = true;
    proto.scheduleCheckPendingRequests = scheduleWhenNeeded;
    return true;
}

module.exports = { quietIdleChecks };
