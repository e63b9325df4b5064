/**
 * The trace id of one event: the id of the upload it comes from, one per upload.
 *
 * The flow finds an upload's trace id by its key and ETag: in the stamps its /upload left
 * (flow context "uploads": by key, the key's recent uploads, oldest first), else in the
 * object's metadata. Two uploads of the same bytes to the same key have the same ETag, so
 * both events find both trace ids. A trace id is therefore *claimed* by the first event that
 * takes it (flow context "traces": key and trace id -> {event, at}), and each event claims the
 * oldest one left: the store announces a key's uploads in their order. The metadata holds only
 * the latest upload's trace id, so without stamps (an upload not made through /upload, or
 * Node-RED restarted in between) a second event that finds it claimed gets a trace id of its
 * own, derived from the event. One cost of the order: when an upload's event is lost, the next
 * event of the same bytes takes that upload's trace id, and the newer upload is the one left
 * without a line.
 *
 * Redeliveries keep their trace id: the same Kafka record (same partition and offset) claims
 * the same trace again, and an event republished by labkit's reconciler is the same version
 * delivered again, so it takes the upload's trace id without a claim.
 */
'use strict';

const crypto = require('crypto');

const RECONCILER = 'labkit-reconcile'; // labkit.pipeline.reconcile.ORIGIN

/** The event's identity: its Kafka record (partition and offset), else the store's sequencer. */
function eventId(kafka, event) {
    if (kafka && kafka.offset !== undefined && kafka.offset !== null) {
        return 'kafka:' + kafka.partition + ':' + kafka.offset;
    }
    const object = event && event.record && event.record.s3 && event.record.s3.object;
    return 'seq:' + String((object && object.sequencer) || '') + ':' + String((event && event.t_event) || '');
}

/** Was the event republished by labkit's reconciler (a version delivered again)? */
function republished(event) {
    const s3 = event && event.record && event.record.s3;
    return Boolean(s3 && s3.configurationId === RECONCILER);
}

/** A trace id of the event's own (32 hex characters): the same for every delivery of the same record. */
function eventTraceId(kafka, event) {
    const text = [event.bucket, event.key, event.etag || '', eventId(kafka, event)].join('\u0000');
    return crypto.createHash('sha256').update(text, 'utf8').digest('hex').slice(0, 32);
}

/**
 * The trace ids of the uploads of `event`'s key with its ETag, oldest first.
 *
 * @param uploads flow context "uploads"[key]: one upload's stamps, or a list of them
 */
function uploadTraceIds(uploads, event) {
    return [].concat(uploads || [])
        .filter(u => u && u.trace_id && (!u.etag || !event.etag || u.etag === event.etag))
        .map(u => u.trace_id);
}

/**
 * The trace id in the object's metadata (minio's statObject), when the object is still the event's version.
 *
 * @returns [trace id], or [] when the object has none or is another version now
 */
function metadataTraceIds(stat, event) {
    const traceId = stat && stat.metaData && stat.metaData['trace-id'];
    const etag = stat && String(stat.etag || '').replace(/"/g, '');
    return traceId && (!etag || !event.etag || etag === event.etag) ? [traceId] : [];
}

/**
 * The event's trace id, claimed in `claims` (flow context "traces", changed in place).
 *
 * @param candidates trace ids found for the event (uploadTraceIds, then the object's metadata)
 * @returns the first candidate no other event claimed; else a trace id of the event's own;
 *          undefined when there is no candidate (the action derives one from the version)
 */
function claimTraceId(claims, kafka, event, candidates, now) {
    const found = candidates.filter(Boolean);
    if (found.length === 0) {
        return undefined;
    }
    if (republished(event)) {
        return found[found.length - 1];
    }
    const id = eventId(kafka, event);
    for (const traceId of found) {
        const slot = event.key + '\u0000' + traceId;
        if (!claims[slot] || claims[slot].event === id) {
            claims[slot] = { event: id, at: now };
            return traceId;
        }
    }
    return eventTraceId(kafka, event);
}

module.exports = { eventId, eventTraceId, uploadTraceIds, metadataTraceIds, claimTraceId };
