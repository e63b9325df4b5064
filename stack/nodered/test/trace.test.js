'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { steps, T0, s3Event } = require('./fixtures');

/** The event half of a record at `offset`, as "parse event" leaves it (with msg.kafka beside it). */
function delivered(key, offset, options = {}) {
    const kafka = { topic: 'dit247', partition: 0, offset: String(offset) };
    const value = JSON.stringify(s3Event('dit247', key, options));
    const ev = steps.parseEvent(value, kafka, 'dit247', T0 + offset).objects[0].event;
    return { kafka: kafka, event: ev };
}

const stamps = (traceId, etag = '0123abcd') => ({ trace_id: traceId, etag: etag, attempts: 1, at: T0 });

test('an upload\'s trace id goes to the first event that finds it', () => {
    const claims = {};
    const { kafka, event } = delivered('cat.png', 7);
    const found = steps.uploadTraceIds(stamps('t-upload'), event);
    assert.deepEqual(found, ['t-upload']);
    assert.equal(steps.claimTraceId(claims, kafka, event, found, T0), 't-upload');
    assert.deepEqual(claims, { 'cat.png\u0000t-upload': { event: 'kafka:0:7', at: T0 } });
});

test('two uploads of the same bytes to one key, both stored before the first event: each event gets its own', () => {
    const claims = {};
    const uploads = {};
    const first = delivered('cat.png', 7);
    const second = delivered('cat.png', 8);
    for (const traceId of ['t-earlier', 't-later']) {
        steps.rememberUpload(uploads, { key: 'cat.png', trace_id: traceId, etag: '0123abcd' }, T0);
    }
    const found = steps.uploadTraceIds(uploads['cat.png'], first.event);
    assert.deepEqual(found, ['t-earlier', 't-later']);
    assert.equal(steps.claimTraceId(claims, first.kafka, first.event, found, T0), 't-earlier');
    assert.equal(steps.claimTraceId(claims, second.kafka, second.event, found, T0), 't-later');
});

test('only the metadata (the latest upload\'s): the second event gets a trace id of its own', () => {
    const claims = {};
    const first = delivered('cat.png', 7);
    const second = delivered('cat.png', 8);
    const found = steps.metadataTraceIds({ etag: '0123abcd', metaData: { 'trace-id': 't-later' } }, first.event);
    const one = steps.claimTraceId(claims, first.kafka, first.event, found, T0);
    const two = steps.claimTraceId(claims, second.kafka, second.event, found, T0);
    assert.equal(one, 't-later');
    assert.notEqual(two, one);
    assert.match(two, /^[0-9a-f]{32}$/);
    assert.equal(steps.eventTraceId(second.kafka, second.event), two); // derived from the record
});

test('the same record delivered again keeps its trace id: a duplicate is still one version', () => {
    const claims = {};
    const { kafka, event } = delivered('cat.png', 7);
    const found = ['t-upload'];
    assert.equal(steps.claimTraceId(claims, kafka, event, found, T0), 't-upload');
    assert.equal(steps.claimTraceId(claims, kafka, event, found, T0 + 5), 't-upload');
    const other = delivered('cat.png', 9);
    const own = steps.claimTraceId(claims, other.kafka, other.event, found, T0);
    assert.equal(steps.claimTraceId(claims, other.kafka, other.event, found, T0), own);
});

test('an event republished by labkit\'s reconciler takes its upload\'s trace id, claimed or not', () => {
    const claims = {};
    const original = delivered('cat.png', 7);
    steps.claimTraceId(claims, original.kafka, original.event, ['t-upload'], T0);
    const again = delivered('cat.png', 30);
    again.event.record.s3.configurationId = 'labkit-reconcile';
    assert.equal(steps.claimTraceId(claims, again.kafka, again.event, ['t-upload'], T0), 't-upload');
});

test('a list of stamps (several uploads of a key): each event claims the oldest one left', () => {
    const claims = {};
    const uploads = [stamps('t-1'), stamps('t-2'), stamps('t-other', 'ffff')];
    const a = delivered('cat.png', 7);
    const b = delivered('cat.png', 8);
    const found = steps.uploadTraceIds(uploads, a.event);
    assert.deepEqual(found, ['t-1', 't-2']);
    assert.equal(steps.claimTraceId(claims, a.kafka, a.event, found, T0), 't-1');
    assert.equal(steps.claimTraceId(claims, b.kafka, b.event, found, T0), 't-2');
});

test('the same trace id under two keys is two uploads, not a conflict', () => {
    const claims = {};
    const a = delivered('a.png', 7);
    const b = delivered('b.png', 8);
    assert.equal(steps.claimTraceId(claims, a.kafka, a.event, ['t'], T0), 't');
    assert.equal(steps.claimTraceId(claims, b.kafka, b.event, ['t'], T0), 't');
});

test('stamps or metadata of another version are not this event\'s', () => {
    const { event } = delivered('cat.png', 7);
    assert.deepEqual(steps.uploadTraceIds(stamps('t-newer', 'beef'), event), []);
    assert.deepEqual(steps.uploadTraceIds(undefined, event), []);
    assert.deepEqual(steps.metadataTraceIds({ etag: '0123abcd', metaData: { 'trace-id': 't-meta' } }, event), ['t-meta']);
    assert.deepEqual(steps.metadataTraceIds({ etag: 'beef', metaData: { 'trace-id': 't-newer' } }, event), []);
    assert.deepEqual(steps.metadataTraceIds({ etag: '0123abcd', metaData: {} }, event), []);
});

test('no trace id found: none given, so the action derives one from the version', () => {
    const { kafka, event } = delivered('cat.png', 7);
    assert.equal(steps.claimTraceId({}, kafka, event, [], T0), undefined);
    assert.equal(steps.claimTraceId({}, kafka, event, [undefined], T0), undefined);
});

test('without a Kafka record, the store\'s sequencer names the event', () => {
    const { event } = delivered('cat.png', 7);
    event.record.s3.object.sequencer = '1A';
    assert.equal(steps.eventId(undefined, event), 'seq:1A:' + event.t_event);
});
