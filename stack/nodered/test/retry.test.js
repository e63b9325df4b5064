'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { steps, T0 } = require('./fixtures');

const settings = (policy, extra = {}) => steps.retryPolicy(Object.assign(
    { policy: policy, maxAttempts: 10, baseMs: 200, capMs: 5000, deadlineMs: 30000 }, extra));

test('the policy reads the subflow settings, numbers from strings, defaults for the missing', () => {
    assert.deepEqual(steps.retryPolicy({ policy: 'Fixed', maxAttempts: '3', baseMs: 100, capMs: '', deadlineMs: null }),
        { policy: 'fixed', maxAttempts: 3, baseMs: 100, capMs: 5000, deadlineMs: 30000 });
    assert.deepEqual(steps.retryPolicy({}),
        { policy: 'exponential', maxAttempts: 10, baseMs: 200, capMs: 5000, deadlineMs: 30000 });
    assert.equal(steps.retryPolicy({ maxAttempts: 'ten' }).maxAttempts, 10);
});

test('policy none never retries', () => {
    const next = steps.nextAttempt(undefined, settings('none'), T0);
    assert.equal(next.gaveUp, "retry policy 'none': no retries");
    assert.equal(next.retry.gave_up, next.gaveUp);
    assert.equal(next.retry.attempt, 1);
    assert.equal(next.delayMs, undefined);
    assert.equal(steps.nextAttempt(undefined, settings('sometimes'), T0).gaveUp, "retry policy 'sometimes': no retries");
});

test('policy fixed waits BASE_MS each time, until MAX_ATTEMPTS attempts were made', () => {
    const policy = settings('fixed', { maxAttempts: 3, baseMs: 100 });
    let state = { attempt: 1, first_ms: T0 };
    const delays = [];
    for (;;) {
        const next = steps.nextAttempt(state, policy, T0 + 10 * delays.length);
        state = next.retry;
        if (next.gaveUp) {
            assert.equal(next.gaveUp, 'gave up after 3 attempts');
            break;
        }
        delays.push(next.delayMs);
    }
    assert.deepEqual(delays, [100, 100]);
    assert.equal(state.attempt, 3);
    assert.equal(state.deadline_ms, T0 + 30000);
});

test('policy exponential: full jitter under min(CAP_MS, BASE_MS * 2^attempt)', () => {
    const policy = settings('exponential', { baseMs: 200, capMs: 5000 });
    const ceilings = [1, 2, 3, 4, 5, 6].map(attempt =>
        steps.backoffMs(policy, attempt, () => 1));
    assert.deepEqual(ceilings, [400, 800, 1600, 3200, 5000, 5000]); // capped
    assert.equal(steps.backoffMs(policy, 3, () => 0), 0);
    assert.equal(steps.backoffMs(policy, 3, () => 0.5), 800);
    const next = steps.nextAttempt({ attempt: 2, first_ms: T0 }, policy, T0 + 1000, () => 0.25);
    assert.equal(next.delayMs, 200); // 0.25 * min(5000, 200 * 2^2), rounded
    assert.equal(next.retry.attempt, 3);
});

test('the delay is rounded to whole ms', () => {
    const next = steps.nextAttempt(undefined, settings('exponential'), T0, () => 0.123456);
    assert.equal(next.delayMs, Math.round(0.123456 * 400));
});

test('no attempt starts after the deadline (DEADLINE_MS after the first)', () => {
    const policy = settings('fixed', { baseMs: 1000, deadlineMs: 5000 });
    const first = steps.nextAttempt(undefined, policy, T0);
    assert.equal(first.retry.deadline_ms, T0 + 5000);
    assert.equal(first.delayMs, 1000);
    const atEdge = steps.nextAttempt(first.retry, policy, T0 + 4000); // starts at T0 + 5000: still allowed
    assert.equal(atEdge.delayMs, 1000);
    const late = steps.nextAttempt(atEdge.retry, policy, T0 + 4001);
    assert.equal(late.gaveUp, 'gave up after 3 attempts: the 5000 ms deadline would pass');
});

test('the exponential deadline counts the drawn sleep', () => {
    const policy = settings('exponential', { deadlineMs: 1000 });
    const state = { attempt: 1, first_ms: T0 };
    assert.ok(steps.nextAttempt(state, policy, T0 + 700, () => 0.5).delayMs === 200); // ends at T0 + 900
    assert.ok(steps.nextAttempt(state, policy, T0 + 700, () => 0.9).gaveUp); // would end at T0 + 1060
});

test('the state is carried, not shared: the caller keeps its old object', () => {
    const old = { attempt: 2, first_ms: T0, deadline_ms: T0 + 999999 };
    const next = steps.nextAttempt(old, settings('fixed'), T0 + 1);
    assert.notEqual(next.retry, old);
    assert.equal(old.attempt, 2);
    assert.deepEqual(next.retry, { attempt: 3, first_ms: T0, deadline_ms: T0 + 999999 });
});

test('a message without retry state was tried once, just now', () => {
    const next = steps.nextAttempt(0, settings('fixed'), T0); // the http request node sets msg.retry = 0
    assert.deepEqual(next.retry, { attempt: 2, first_ms: T0, deadline_ms: T0 + 30000 });
});

test('a permanent error is not retried, whatever the policy', () => {
    const permanent = { permanent: true, status: 409, reason: '409 ExistingObjectIsDirectory: Existing Object is a directory.' };
    for (const policy of ['exponential', 'fixed', 'none']) {
        const next = steps.nextAttempt({ attempt: 1, first_ms: T0, permanent: permanent }, settings(policy), T0 + 3);
        assert.equal(next.gaveUp, 'not retried after attempt 1: a permanent error (409)', policy);
        assert.equal(next.retry.gave_up, next.gaveUp);
        assert.equal(next.retry.attempt, 1);
        assert.equal(next.delayMs, undefined);
    }
    const malformed = steps.nextAttempt({ attempt: 2, first_ms: T0, permanent: { reason: 'x' } }, settings('fixed'), T0);
    assert.equal(malformed.gaveUp, 'not retried after attempt 2: a permanent error');
    // a transient failure after it was cleared (permanent: null) keeps its retries
    assert.equal(steps.nextAttempt({ attempt: 1, first_ms: T0, permanent: null }, settings('fixed'), T0).delayMs, 200);
});
