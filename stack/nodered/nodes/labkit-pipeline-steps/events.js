/**
 * Stage 2, events: one Kafka record from the upload topic -> the objects to resize.
 *
 * Keys: versitygw puts the object key into the event as-is (not URL-encoded the way AWS
 * does); checked with spaces, '+', '%' and non-ASCII keys. The key is used as given.
 */
'use strict';

const { unquote } = require('./shared');

function malformed(reason, now) {
    return { objects: [], ignored: ['malformed'], malformed: { reason: reason, t_event: now } };
}

/** The record's event name without the "s3:" prefix ("ObjectCreated:Put"). */
function eventName(record) {
    return String((record && record.eventName) || '').replace(/^s3:/, '');
}

/** Why a record of an S3 event needs no resize, or null when it does. */
function skipReason(record, bucket) {
    const s3 = record && record.s3;
    if (!eventName(record).startsWith('ObjectCreated:')) {
        return 'not_object_created';
    }
    if ((s3 && s3.bucket && s3.bucket.name) !== bucket) {
        return 'other_bucket';
    }
    const key = s3.object && s3.object.key;
    return typeof key !== 'string' || key === '' ? 'no_key' : null;
}

function jsonKind(value) {
    return value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
}

/**
 * Parse one record's value.
 *
 * @param raw the record's value (a string, or null)
 * @param kafka msg.kafka (topic, partition, offset), carried on with each object
 * @param bucket the upload bucket: events of other buckets are ignored
 * @param now t_event, the moment the flow got the event
 * @returns {objects, ignored, malformed}: one {kafka, event} per ObjectCreated record worth
 *          resizing; the reason for each record left out (test_event, not_object_created,
 *          other_bucket, no_key, malformed); and {reason, t_event} when the value is not an
 *          S3 event at all, else null
 */
function parseEvent(raw, kafka, bucket, now) {
    let event;
    try {
        event = JSON.parse(raw);
    } catch (err) {
        return malformed('not JSON: ' + String(err.message).slice(0, 200), now);
    }
    if (event === null || typeof event !== 'object' || Array.isArray(event)) {
        return malformed('not an S3 event: a JSON ' + jsonKind(event), now);
    }
    if (typeof event.Event === 'string' && event.Event.endsWith('TestEvent')) {
        return { objects: [], ignored: ['test_event'], malformed: null };
    }
    if (!Array.isArray(event.Records)) {
        return malformed('not an S3 event: no Records array', now);
    }
    const objects = [];
    const ignored = [];
    for (const record of event.Records) {
        const reason = skipReason(record, bucket);
        if (reason) {
            ignored.push(reason);
            continue;
        }
        const s3 = record.s3;
        objects.push({
            kafka: kafka,
            event: { bucket: bucket, key: s3.object.key, size: s3.object.size, etag: unquote(s3.object.eTag),
                     name: eventName(record), t_event: now, record: record }
        });
    }
    return { objects: objects, ignored: ignored, malformed: null };
}

/**
 * Add `reasons` to the tally of ignored records (flow context "ignored", reason -> count).
 *
 * @returns the node's status text ("ignored N (last reason)"), or null when nothing was ignored
 */
function tallyIgnored(tally, reasons) {
    for (const reason of reasons) {
        tally[reason] = (tally[reason] || 0) + 1;
    }
    if (reasons.length === 0) {
        return null;
    }
    const total = Object.values(tally).reduce((a, b) => a + b, 0);
    return 'ignored ' + total + ' (' + reasons[reasons.length - 1] + ')';
}

module.exports = { parseEvent, eventName, tallyIgnored };
