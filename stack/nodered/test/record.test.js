'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { steps, T0, joinedRecord, invokedEvent, s3Event, supersededResult } = require('./fixtures');

const uploadStamps = (traceId, attempts = 1) =>
    ({ trace_id: traceId, etag: '0123abcd', t_upload_start: T0, t_uploaded: T0 + 80, attempts: attempts, at: T0 + 81 });

test('the metrics line of an image uploaded through /upload and joined with its webhook', () => {
    const record = joinedRecord('a/cat.png', { invoke_attempts: 2 });
    const line = steps.metricsLine(record, uploadStamps(record.result.trace_id, 3), false);
    assert.deepEqual(line, {
        key: 'a/cat.png', trace_id: 'trace-acatpng', source_etag: '0123abcd', attempts: 4, upload_attempts: 3,
        invoke_attempts: 2,
        outcome: 'ok', t_upload_start: T0, t_uploaded: T0 + 80, t_event: T0 + 100, t_invoke_start: T0 + 105,
        t_action_start: T0 + 300, t_action_end: T0 + 361.5, t_webhook: T0 + 400, t_done: T0 + 400,
        completed_by: 'webhook', duration_ms: 400, key_out: 'a/cat.jpg', bucket_out: 'dit247c',
        bytes_in: 345678, bytes_out: 45678, width_in: 1920, height_in: 1080, width_out: 640, height_out: 360,
        format_in: 'JPEG', format: 'JPEG', download_ms: 12.5, resize_ms: 40.25, upload_ms: 8.125,
        action_upload_ms: 8.125, activation_id: 'a1b2c3d4e5f6'
    });
});

test('an upload of another trace (an older upload of the key) is not this image\'s', () => {
    const record = joinedRecord('cat.png');
    const line = steps.metricsLine(record, uploadStamps('someone-else'), false);
    assert.equal(line.upload_attempts, null);
    assert.equal(line.attempts, 1);
    assert.equal(line.t_upload_start, null); // the action found no t-upload-start metadata either
    assert.equal(line.duration_ms, T0 + 400 - (T0 + 100)); // from t_event
});

test('an object stored straight into S3 with stamps in its metadata', () => {
    const record = joinedRecord('cat.png');
    Object.assign(record.result, { t_upload_start_ms: T0 - 50, t_uploaded_ms: T0 + 20 });
    const line = steps.metricsLine(record, undefined, false);
    assert.equal(line.t_upload_start, T0 - 50);
    assert.equal(line.t_uploaded, T0 + 20);
    assert.equal(line.duration_ms, 450);
    record.result.t_upload_start_ms = 'not a number';
    assert.equal(steps.metricsLine(record, undefined, false).t_upload_start, null);
});

test('completed by the output check: it ends at the action\'s end', () => {
    const record = joinedRecord('cat.png', { t_webhook: null, completed_by: 'check' });
    const line = steps.metricsLine(record, uploadStamps(record.result.trace_id), false);
    assert.equal(line.completed_by, 'check');
    assert.equal(line.t_webhook, null);
    assert.equal(line.t_done, T0 + 361.5);
    assert.equal(line.duration_ms, 361.5);
});

test('an expired half: outcome no_webhook, no end', () => {
    const record = joinedRecord('cat.png', { t_webhook: null, completed_by: undefined });
    const line = steps.metricsLine(record, undefined, true);
    assert.equal(line.outcome, 'no_webhook');
    assert.equal(line.completed_by, null);
    assert.equal(line.t_done, null);
    assert.equal(line.duration_ms, null);
});

test('the error line and the dead letter of a failed image', () => {
    const ev = invokedEvent('bad/text.jpg');
    const failed = { event: ev, invoke_attempts: 1, activation: { id: 'act9', start: T0 + 200, end: T0 + 210 },
                     failure: { code: 'not_an_image', message: 'not an image', retryable: false } };
    const line = steps.errorLine(failed, uploadStamps(ev.trace_id, 2), T0 + 999);
    assert.deepEqual(line, {
        key: 'bad/text.jpg', trace_id: ev.trace_id, source_etag: '0123abcd', attempts: 2, upload_attempts: 2,
        invoke_attempts: 1,
        outcome: 'error', code: 'not_an_image', error: 'not an image', gave_up: null,
        t_upload_start: T0, t_uploaded: T0 + 80, t_event: ev.t_event, t_invoke_start: ev.t_invoke_start,
        t_action_start: T0 + 200, t_action_end: T0 + 210, t_webhook: null, t_failed: T0 + 999,
        duration_ms: null, bucket: 'dit247', activation_id: 'act9'
    });
    assert.deepEqual(steps.deadLetter(line, ev), {
        reason: 'not_an_image', message: 'not an image', gave_up: null, bucket: 'dit247', key: 'bad/text.jpg',
        trace_id: ev.trace_id, attempts: 2, activation_id: 'act9', t_failed: T0 + 999, event: ev.record
    });
});

test('the stamps of several uploads of one key: each line takes its own upload\'s', () => {
    const record = joinedRecord('cat.png');
    const mine = uploadStamps(record.result.trace_id, 2);
    const line = steps.metricsLine(record, [uploadStamps('an-earlier-upload', 5), mine], false);
    assert.equal(line.upload_attempts, 2);
    assert.equal(steps.metricsLine(record, [uploadStamps('someone-else')], false).upload_attempts, null);
});

test('a superseded version: its own line, no output and no dead letter', () => {
    const ev = invokedEvent('a/cat.png');
    const msg = { event: ev, result: supersededResult('a/cat.png', 'before_write', { trace_id: ev.trace_id }),
                  invoke_attempts: 2, activation: { id: 'act7' } };
    const line = steps.supersededLine(msg, uploadStamps(ev.trace_id, 1));
    assert.deepEqual(line, {
        key: 'a/cat.png', trace_id: ev.trace_id, source_etag: '0123abcd', attempts: 2, upload_attempts: 1,
        invoke_attempts: 2, outcome: 'superseded', found_at: 'before_write', current_etag: '4567ef01',
        repaired: false, t_upload_start: T0, t_uploaded: T0 + 80, t_event: ev.t_event,
        t_invoke_start: ev.t_invoke_start, t_action_start: T0 + 300, t_action_end: T0 + 310, t_webhook: null,
        t_done: null, duration_ms: null, key_out: 'a/cat.jpg', bucket_out: 'dit247c', activation_id: 'act7'
    });
    const gone = steps.supersededLine({ event: ev, result: supersededResult('a/cat.png', 'after_write',
        { current_etag: null, source_etag: undefined }), invoke_attempts: 1 }, undefined);
    assert.deepEqual([gone.current_etag, gone.source_etag, gone.repaired, gone.upload_attempts, gone.activation_id],
        [null, '0123abcd', true, null, null]); // the event's ETag when the result has none
});

test('a failure after the retries gave up, with nothing known about it', () => {
    const ev = invokedEvent('cat.png');
    delete ev.trace_id;
    const line = steps.errorLine({ event: ev, invoke_attempts: 6,
        failure: { code: 'faas_unreachable', message: 'ECONNREFUSED', gave_up: 'gave up after 6 attempts' } },
    undefined, T0 + 5);
    assert.equal(line.trace_id, null);
    assert.equal(line.attempts, 6);
    assert.equal(line.upload_attempts, null);
    assert.equal(line.gave_up, 'gave up after 6 attempts');
    assert.equal(line.activation_id, null);
    assert.equal(steps.errorLine({ event: ev }, undefined, T0).code, 'unknown');
    assert.equal(steps.errorLine({ event: ev }, undefined, T0).invoke_attempts, null);
});

test('the malformed line keeps where the record was and how it began', () => {
    const raw = '{"Records": [ not json ü';
    const kafka = { topic: 'dit247', partition: 2, offset: '1234' };
    const parsed = steps.parseEvent(raw, kafka, 'dit247', T0);
    const line = steps.malformedLine(parsed.malformed, kafka, raw);
    assert.equal(line.outcome, 'malformed');
    assert.equal(line.code, 'malformed');
    assert.match(line.error, /^not JSON: /);
    assert.equal(line.t_event, T0);
    assert.equal(line.kafka_partition, 2);
    assert.equal(line.kafka_offset, '1234');
    assert.equal(line.raw_bytes, Buffer.byteLength(raw));
    assert.equal(line.raw_prefix, raw);
    const empty = steps.malformedLine({ reason: 'not an S3 event: a JSON null', t_event: T0 }, undefined, null);
    assert.equal(empty.raw_bytes, 0);
    assert.equal(empty.raw_prefix, null);
    assert.equal(empty.kafka_offset, null);
    assert.equal(steps.malformedLine({ reason: 'x', t_event: T0 }, kafka, 'y'.repeat(300)).raw_prefix.length, 200);
});

test('chart points in seconds', () => {
    assert.deepEqual(steps.chartPoint({ duration_ms: 1234 }), { topic: 'end-to-end (s)', payload: 1.234 });
    assert.deepEqual(steps.thresholdPoint(10000), { topic: 'SLA threshold (s)', payload: 10 });
});

test('the SLA alert: one per image at or over the threshold, none under it', () => {
    const alerted = {};
    const line = steps.metricsLine(joinedRecord('slow.png', { t_webhook: T0 + 12400 }), undefined, false);
    assert.equal(line.duration_ms, 12300);
    assert.equal(steps.slaAlert(line, 20000, alerted, T0), null);
    assert.deepEqual(alerted, {});
    const mail = steps.slaAlert(line, 10000, alerted, T0 + 1);
    assert.equal(mail.topic, 'SLA alert: slow.png took 12.30 s');
    assert.equal(mail.from, 'labkit-pipeline@lab.local');
    assert.match(mail.payload, /^The image slow\.png took 12\.30 s from upload to resized output,\nover the SLA threshold of 10 s\./);
    assert.match(mail.payload, /output: {9}dit247c\/slow\.jpg/);
    assert.match(mail.payload, /upload {10}-\n/); // no upload stamp
    assert.match(mail.payload, new RegExp('webhook {9}' + new Date(T0 + 12400).toISOString()));
    assert.deepEqual(alerted, { ['slow.png\u0000' + line.trace_id]: { at: T0 + 1 } });
    assert.equal(steps.slaAlert(line, 10000, alerted, T0 + 2), null); // once only
    const again = Object.assign({}, line, { trace_id: 'a new upload of the same key' });
    assert.ok(steps.slaAlert(again, 10000, alerted, T0 + 3));
    assert.ok(steps.slaAlert(Object.assign({}, line, { key: 'edge.png' }), 12300, alerted, T0)); // at: counts
    assert.equal(steps.slaAlert(Object.assign({}, line, { key: 'n', duration_ms: null }), 0.001, alerted, T0), null);
});

test('an S3 event carries into the record unchanged', () => {
    const ev = invokedEvent('x.png');
    assert.deepEqual(ev.record, s3Event('dit247', 'x.png').Records[0]);
});
