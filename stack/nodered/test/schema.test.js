'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { steps, T0, joinedRecord, invokedEvent, supersededResult } = require('./fixtures');
const { lineErrors } = require('./schema');

/** A line as it is written to the file: built by the module, through JSON. */
const written = line => JSON.parse(JSON.stringify(line));

function builtLines() {
    const stamps = { trace_id: 'trace-catpng', etag: 'e', t_upload_start: T0, t_uploaded: T0 + 80, attempts: 2, at: T0 };
    const ev = invokedEvent('bad.jpg');
    const kafka = { topic: 'dit247', partition: 0, offset: '17' };
    return {
        'ok, by the webhook': steps.metricsLine(joinedRecord('cat.png'), stamps, false),
        'ok, by the output check': steps.metricsLine(
            joinedRecord('cat.png', { t_webhook: null, completed_by: 'check' }), undefined, false),
        'no_webhook': steps.metricsLine(joinedRecord('cat.png', { t_webhook: null }), undefined, true),
        'error': steps.errorLine({ event: ev, invoke_attempts: 1, activation: { id: 'a', start: T0, end: T0 + 1 },
                                   failure: { code: 'truncated', message: 'image file is truncated' } },
        undefined, T0 + 9),
        'error, gave up, nothing known': steps.errorLine({ event: Object.assign({}, ev, { trace_id: undefined,
            t_invoke_start: undefined }), failure: { code: 'faas_unreachable', message: '',
            gave_up: 'gave up after 10 attempts' } }, undefined, T0),
        'superseded at the read': steps.supersededLine({ event: ev, invoke_attempts: 1,
            result: supersededResult('bad.jpg', 'read', { current_etag: null }) }, undefined),
        'superseded after the write, repaired': steps.supersededLine({ event: ev, invoke_attempts: 3,
            activation: { id: 'a' }, result: supersededResult('bad.jpg', 'after_write') }, stamps),
        'malformed': steps.malformedLine(steps.parseEvent('nope', kafka, 'dit247', T0).malformed, kafka, 'nope'),
        'malformed, no value': steps.malformedLine(steps.parseEvent(null, kafka, 'dit247', T0).malformed, kafka, null)
    };
}

test('every line the module builds is valid', () => {
    for (const [what, line] of Object.entries(builtLines())) {
        assert.deepEqual(lineErrors(written(line)), [], what);
    }
});

test('the schema notices a line that drifts', () => {
    const lines = builtLines();
    const ok = written(lines['ok, by the webhook']);
    const broken = {
        'no outcome': Object.assign({}, ok, { outcome: undefined }),
        'an unknown outcome': Object.assign({}, ok, { outcome: 'done' }),
        'a field it does not know': Object.assign({}, ok, { colour: 'blue' }),
        'a missing field': Object.assign({}, ok, { key_out: undefined }),
        'a duration as text': Object.assign({}, ok, { duration_ms: '400' }),
        'an ok line without its end': Object.assign({}, ok, { t_done: null, duration_ms: null }),
        'completed by the webhook that never came': Object.assign({}, ok, { t_webhook: null }),
        'fractional attempts': Object.assign({}, ok, { attempts: 1.5 }),
        'an error line with a duration': Object.assign(written(lines.error), { duration_ms: 5 }),
        'a malformed line with a key': Object.assign(written(lines.malformed), { key: 'k' }),
        'a numeric Kafka offset': Object.assign(written(lines.malformed), { kafka_offset: 17 }),
        'a superseded line with an end': Object.assign(written(lines['superseded at the read']), { t_done: T0 }),
        'a superseded line found nowhere': Object.assign(written(lines['superseded at the read']), { found_at: 'later' }),
        'a superseded line without its version': Object.assign(written(lines['superseded at the read']),
            { source_etag: undefined }),
        'an empty ETag': Object.assign({}, ok, { source_etag: '' })
    };
    for (const [what, line] of Object.entries(broken)) {
        assert.notDeepEqual(lineErrors(written(line)), [], what);
    }
});
