'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { steps, T0, s3Event, actionResult, invokedEvent } = require('./fixtures');

const SETTINGS = { outBucket: 'dit247c', graceMs: 5000, ttlMs: 180000 };

function invokeMsg(key, overrides = {}) {
    return { side: 'invoke', event: invokedEvent(key), result: actionResult(key, overrides),
             invoke_attempts: 1, activation: { id: 'act1' } };
}

function hookMsg(key, eTag, tWebhook) {
    return { side: 'webhook', t_webhook: tWebhook, event: s3Event('dit247c', key, { eTag: eTag }) };
}

test('the webhook token: equal strings only, and never an empty expected token', () => {
    assert.equal(steps.tokenMatches('s3cr3t-token', 's3cr3t-token'), true);
    for (const given of ['s3cr3t-toke', 's3cr3t-tokenx', 'S3cr3t-token', '', undefined, null]) {
        assert.equal(steps.tokenMatches(given, 's3cr3t-token'), false, String(given));
    }
    assert.equal(steps.tokenMatches('', ''), false);
    assert.equal(steps.tokenMatches(undefined, undefined), false);
});

test('the webhook body: parsed when text, null when not JSON, as is when parsed', () => {
    const event = s3Event('dit247c', 'cat.jpg');
    assert.deepEqual(steps.webhookEvent(JSON.stringify(event)), event);
    assert.deepEqual(steps.webhookEvent(Buffer.from(JSON.stringify(event))), event);
    assert.equal(steps.webhookEvent(event), event);
    assert.equal(steps.webhookEvent('not json'), null);
    assert.equal(steps.webhookEvent(undefined), undefined);
});

test('webhook halves: ObjectCreated in the output bucket only', () => {
    const event = { Records: [
        ...s3Event('dit247c', 'a.jpg', { eTag: '"e1"' }).Records,
        ...s3Event('dit247', 'a.png').Records,
        ...s3Event('dit247c', 'b.jpg', { eventName: 's3:ObjectRemoved:Delete' }).Records,
        { eventName: 'ObjectCreated:Put', s3: { bucket: { name: 'dit247c' }, object: { key: 7 } } },
        ...s3Event('dit247c', 'c.jpg', { eTag: '' }).Records
    ] };
    assert.deepEqual(steps.webhookHalves(event, 'dit247c', T0), [
        { key_out: 'a.jpg', etag: 'e1', t_webhook: T0 }, { key_out: 'c.jpg', etag: null, t_webhook: T0 }]);
    assert.deepEqual(steps.webhookHalves({ Event: 's3:TestEvent' }, 'dit247c', T0), []);
    assert.deepEqual(steps.webhookHalves(null, 'dit247c', T0), []);
});

test('the invoke result first, then its webhook: joined, completed by the webhook', () => {
    const pending = {};
    const inv = invokeMsg('cat.png');
    const first = steps.joinHalves(pending, inv, T0 + 400, SETTINGS);
    assert.deepEqual(first.done, []);
    assert.deepEqual(first.check, [{ side: 'check', key_out: 'cat.jpg', etag: 'feed01', at: T0 + 400, delay: 5000 }]);
    assert.equal(pending['cat.jpg'].length, 1);
    const second = steps.joinHalves(pending, hookMsg('cat.jpg', '"feed01"', T0 + 450), T0 + 450, SETTINGS);
    assert.deepEqual(pending, {});
    assert.deepEqual(second.check, []);
    assert.equal(second.done.length, 1);
    const record = second.done[0].record;
    assert.equal(record.result, inv.result);
    assert.equal(record.event, inv.event);
    assert.equal(record.side, 'invoke');
    assert.equal(record.at, T0 + 400);
    assert.equal(record.t_webhook, T0 + 450);
    assert.equal(record.completed_by, 'webhook');
    assert.equal(record.invoke_attempts, 1);
    assert.deepEqual(record.activation, { id: 'act1' });
});

test('the webhook first (it can beat the invoke\'s reply): joined when the result comes', () => {
    const pending = {};
    assert.deepEqual(steps.joinHalves(pending, hookMsg('cat.jpg', 'feed01', T0 + 390), T0 + 390, SETTINGS),
        { done: [], check: [] }); // no output check for a webhook half
    const joined = steps.joinHalves(pending, invokeMsg('cat.png'), T0 + 400, SETTINGS);
    assert.deepEqual(joined.check, []);
    assert.equal(joined.done[0].record.t_webhook, T0 + 390);
    assert.deepEqual(pending, {});
});

test('ETags pair the right halves when one key is written twice', () => {
    const pending = {};
    steps.joinHalves(pending, invokeMsg('cat.png', { etag_out: 'v1' }), T0 + 1, SETTINGS);
    steps.joinHalves(pending, invokeMsg('cat.png', { etag_out: 'v2', trace_id: 'second' }), T0 + 2, SETTINGS);
    const joined = steps.joinHalves(pending, hookMsg('cat.jpg', 'v2', T0 + 3), T0 + 3, SETTINGS);
    assert.equal(joined.done[0].record.result.trace_id, 'second');
    assert.deepEqual(pending['cat.jpg'].map(h => h.etag), ['v1']);
    const unknown = steps.joinHalves(pending, hookMsg('cat.jpg', '', T0 + 4), T0 + 4, SETTINGS);
    assert.equal(unknown.done[0].record.etag, 'v1'); // no ETag on one side: the first waiting half
    assert.deepEqual(pending, {});
    const stranger = steps.joinHalves(pending, hookMsg('cat.jpg', 'v3', T0 + 5), T0 + 5, SETTINGS);
    assert.deepEqual(stranger.done, []); // a webhook of another version waits for its own result
    assert.equal(pending['cat.jpg'][0].side, 'webhook');
});

test('a sweep message joins nothing', () => {
    const pending = {};
    assert.deepEqual(steps.joinHalves(pending, { side: 'sweep' }, T0, SETTINGS), { done: [], check: [] });
    assert.deepEqual(pending, {});
});

test('halves older than the TTL expire; an invoke half as a record without webhook', () => {
    const pending = {};
    steps.joinHalves(pending, invokeMsg('old.png'), T0, SETTINGS);
    steps.joinHalves(pending, hookMsg('stray.jpg', 'x', T0), T0, SETTINGS);
    steps.joinHalves(pending, invokeMsg('new.png'), T0 + 100000, SETTINGS);
    assert.deepEqual(steps.expireHalves(pending, T0 + 180000, 180000), []); // exactly the TTL: kept
    const expired = steps.expireHalves(pending, T0 + 180001, 180000);
    assert.equal(expired.length, 1);
    assert.equal(expired[0].expired, true);
    assert.equal(expired[0].record.event.key, 'old.png');
    assert.equal(expired[0].record.t_webhook, null);
    assert.deepEqual(Object.keys(pending), ['new.jpg']);
});

test('the join step sweeps at most every 5 s, and on every sweep message', () => {
    const state = { pending: {}, uploads: { 'old.png': { at: T0 } }, alerted: { x: { at: T0 } }, swept: undefined };
    steps.join(state, invokeMsg('a.png'), T0 + 10, SETTINGS);
    assert.equal(state.swept, T0 + 10); // the first message sweeps
    const later = T0 + 200000;
    steps.join(state, invokeMsg('b.png'), T0 + 4000, SETTINGS);
    assert.equal(state.swept, T0 + 10);
    let out = steps.join(state, { side: 'sweep' }, later, SETTINGS);
    assert.equal(state.swept, later);
    assert.deepEqual(out.expired.map(m => m.record.event.key), ['a.png', 'b.png']);
    assert.deepEqual(state.uploads, {});
    assert.deepEqual(state.alerted, {});
    assert.deepEqual(state.pending, {});
    out = steps.join(state, invokeMsg('c.png'), later + 5001, SETTINGS); // 5 s since: sweeps again
    assert.equal(state.swept, later + 5001);
    assert.deepEqual(out.expired, []);
    assert.equal(out.check.length, 1);
});

test('stale map entries go, fresh ones stay', () => {
    const map = { a: { at: T0 }, b: { at: T0 + 5 }, c: {} };
    assert.equal(steps.dropStale(map, T0 + 105, 100), map);
    assert.deepEqual(map, { b: { at: T0 + 5 } });
});

test('a list of entries under one key keeps its fresh ones (several uploads of a key)', () => {
    const map = { k: [{ trace_id: 'a', at: T0 }, { trace_id: 'b', at: T0 + 50 }], gone: [{ at: T0 }], empty: [] };
    steps.dropStale(map, T0 + 105, 100);
    assert.deepEqual(map, { k: [{ trace_id: 'b', at: T0 + 50 }] });
});

test('the sweep drops old trace claims too', () => {
    const state = { pending: {}, uploads: {}, alerted: {}, traces: { 'k\u0000t': { event: 'kafka:0:1', at: T0 } } };
    steps.join(state, { side: 'sweep' }, T0 + 200000, SETTINGS);
    assert.deepEqual(state.traces, {});
    steps.join({ pending: {}, uploads: {}, alerted: {} }, { side: 'sweep' }, T0, SETTINGS); // no claims yet: fine
});

test('the output check completes a waiting half when the object is there', () => {
    const pending = {};
    const { check } = steps.joinHalves(pending, invokeMsg('cat.png'), T0 + 400, SETTINGS);
    const msg = check[0];
    assert.equal(steps.waitingHalf(pending, msg).etag, 'feed01');
    const record = steps.completeByCheck(pending, msg, { etag: 'feed01', size: 45678 });
    assert.equal(record.completed_by, 'check');
    assert.equal(record.t_webhook, null);
    assert.equal(record.result.key_out, 'cat.jpg');
    assert.deepEqual(pending, {});
    assert.equal(steps.waitingHalf(pending, msg), undefined);
    assert.equal(steps.completeByCheck(pending, msg, { etag: 'feed01' }), null); // already done
});

test('the output check completes a half whose output a later write replaced, and leaves one the webhook joined', () => {
    const pending = {};
    const msg = steps.joinHalves(pending, invokeMsg('cat.png'), T0 + 400, SETTINGS).check[0];
    const replaced = steps.completeByCheck(pending, msg, { etag: 'other' }); // a newer version's output
    assert.equal(replaced.completed_by, 'check');
    assert.equal(replaced.etag, 'feed01');
    assert.deepEqual(pending, {});
    const blank = steps.joinHalves(pending, invokeMsg('cat.png'), T0 + 450, SETTINGS).check[0];
    assert.ok(steps.completeByCheck(pending, blank, { etag: '' })); // the store gave no ETag: take it
    const again = steps.joinHalves(pending, invokeMsg('cat.png'), T0 + 500, SETTINGS).check[0];
    steps.joinHalves(pending, hookMsg('cat.jpg', 'feed01', T0 + 600), T0 + 600, SETTINGS);
    assert.equal(steps.waitingHalf(pending, again), undefined);
    assert.equal(steps.completeByCheck(pending, again, { etag: 'feed01' }), null);
});
