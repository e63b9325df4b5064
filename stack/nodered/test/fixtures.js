/**
 * What the pipeline's steps get from the world, as the real services send it: the store's S3
 * events, the FaaS API's activation records, the resize action's result. Shared by the tests.
 */
'use strict';

const path = require('path');

const steps = require(path.join(__dirname, '..', 'nodes', 'labkit-pipeline-steps'));
const SCHEMA_FILE = path.join(__dirname, '..', 'metrics-line.schema.json');
const FLOWS_FILE = path.join(__dirname, '..', 'flows.json');

const T0 = 1_760_000_000_000; // an epoch ms

/** A versitygw event (as on Kafka or the webhook): one record per object. */
function s3Event(bucket, key, options = {}) {
    return {
        Records: [{
            eventVersion: '2.2', eventSource: 'aws:s3', eventTime: new Date(T0).toISOString(),
            eventName: options.eventName || 's3:ObjectCreated:Put',
            s3: {
                bucket: { name: bucket },
                object: { key: key, size: options.size || 1234, eTag: 'eTag' in options ? options.eTag : '"0123abcd"' }
            }
        }]
    };
}

/** The resize action's success result. */
function actionResult(key, overrides = {}) {
    return Object.assign({
        bucket_out: 'dit247c', key_out: key.replace(/\.[a-z]+$/, '') + '.jpg', etag_out: 'feed01',
        trace_id: 'trace-' + key.replace(/\W/g, ''), source_etag: '0123abcd',
        width_in: 1920, height_in: 1080, width_out: 640, height_out: 360, bytes_in: 345678, bytes_out: 45678,
        format: 'JPEG', content_type: 'image/jpeg', format_in: 'JPEG', mode_in: 'RGB',
        download_ms: 12.5, resize_ms: 40.25, upload_ms: 8.125,
        t_action_start_ms: T0 + 300, t_action_end_ms: T0 + 361.5, t_event_ms: T0 + 100
    }, overrides);
}

/** The resize action's result for a version a newer upload of the key replaced (see stack/actions/resize.py). */
function supersededResult(key, foundAt = 'read', overrides = {}) {
    return Object.assign({
        superseded: true, found_at: foundAt, bucket: 'dit247', key: key, bucket_out: 'dit247c',
        key_out: key.replace(/\.[a-z]+$/, '') + '.jpg', source_etag: '0123abcd', current_etag: '4567ef01',
        repaired: foundAt === 'after_write', trace_id: 'trace-' + key.replace(/\W/g, ''),
        t_action_start_ms: T0 + 300, t_action_end_ms: T0 + 310, t_event_ms: T0 + 100
    }, overrides);
}

/** The FaaS API's answer to a blocking invoke (?blocking=true&result=false). */
function activationRecord(result, success = true, status = 'success') {
    return {
        activationId: 'a1b2c3d4e5f6', start: T0 + 290, end: T0 + 370, duration: 80, name: 'resize',
        response: { status: success ? 'success' : status, statusCode: success ? 0 : 1, success: success,
                    result: result }
    };
}

/** An application error result of the action (a bad image). */
function actionError(code, message, retryable) {
    const error = { code: code, message: message };
    if (retryable !== undefined) {
        error.retryable = retryable;
    }
    return { error: error };
}

/** The event half of an image, as parseEvent and "invoke request" leave it on msg.event. */
function invokedEvent(key, now = T0 + 100) {
    const parsed = steps.parseEvent(JSON.stringify(s3Event('dit247', key)), { partition: 0, offset: '7' }, 'dit247', now);
    const ev = parsed.objects[0].event;
    ev.trace_id = 'trace-' + key.replace(/\W/g, '');
    ev.t_invoke_start = now + 5;
    return ev;
}

/** A record the join completed: what "metrics line, chart, SLA alert" gets as msg.record. */
function joinedRecord(key, overrides = {}) {
    return Object.assign({
        side: 'invoke', at: T0 + 370, etag: 'feed01', event: invokedEvent(key), result: actionResult(key),
        invoke_attempts: 1, activation: { id: 'a1b2c3d4e5f6', start: T0 + 290, end: T0 + 370, duration: 80 },
        t_webhook: T0 + 400, completed_by: 'webhook'
    }, overrides);
}

module.exports = {
    steps, SCHEMA_FILE, FLOWS_FILE, T0, s3Event, actionResult, supersededResult, activationRecord, actionError,
    invokedEvent, joinedRecord
};
