/**
 * Stage 5, record: one metrics line per image (stack/nodered/metrics-line.schema.json), the
 * dashboard's chart points, the dead letters, and the SLA alert e-mail.
 *
 * Timestamps are epoch milliseconds (t_*), durations milliseconds (*_ms).
 */
'use strict';

const { numOrNull } = require('./shared');

/**
 * The stamps of the upload of this image's trace, else null.
 *
 * @param upload flow context "uploads"[key]: one upload's stamps, or a list of them
 */
function ownUpload(upload, traceId) {
    return [].concat(upload || []).find(u => u && u.trace_id === traceId) || null;
}

/**
 * The metrics line of a resized image (outcome "ok"), or of one whose end nobody saw
 * (outcome "no_webhook": the join expired its invoke half).
 *
 * attempts = upload attempts + invoke attempts - 1 (1: nothing was retried); the parts are kept
 * as upload_attempts (null when not uploaded through /upload) and invoke_attempts.
 * t_done is when the pipeline knew the image was done: the webhook, or, when the output check
 * completed the record (completed_by "check"), the action's end. duration_ms = t_done -
 * t_upload_start (t_event without an upload stamp). upload_ms is the action's write of the
 * output (as the action names it); action_upload_ms repeats it, as labkit's metrics table
 * derives its own upload_ms stage.
 *
 * @param record the joined record: {event, result, invoke_attempts, activation, t_webhook, completed_by}
 * @param upload the flow's stamps of the upload of record.event.key, if any
 * @param expired the join dropped the record unjoined
 */
function metricsLine(record, upload, expired) {
    const ev = record.event;
    const res = record.result;
    const mine = ownUpload(upload, res.trace_id);
    const tUploadStart = mine ? mine.t_upload_start : numOrNull(res.t_upload_start_ms);
    const tUploaded = mine ? mine.t_uploaded : numOrNull(res.t_uploaded_ms);
    const start = tUploadStart !== null ? tUploadStart : ev.t_event;
    const uploadAttempts = mine ? mine.attempts : null;
    const tDone = record.t_webhook !== null && record.t_webhook !== undefined ? record.t_webhook
        : record.completed_by === 'check' ? numOrNull(res.t_action_end_ms) : null;
    return {
        key: ev.key, trace_id: res.trace_id, source_etag: res.source_etag || null,
        attempts: (uploadAttempts || 1) + record.invoke_attempts - 1,
        upload_attempts: uploadAttempts, invoke_attempts: record.invoke_attempts,
        outcome: expired ? 'no_webhook' : 'ok',
        t_upload_start: tUploadStart, t_uploaded: tUploaded, t_event: ev.t_event, t_invoke_start: ev.t_invoke_start,
        t_action_start: numOrNull(res.t_action_start_ms), t_action_end: numOrNull(res.t_action_end_ms),
        t_webhook: record.t_webhook, t_done: tDone, completed_by: expired ? null : record.completed_by,
        duration_ms: tDone === null ? null : tDone - start,
        key_out: res.key_out, bucket_out: res.bucket_out,
        bytes_in: res.bytes_in, bytes_out: res.bytes_out,
        width_in: res.width_in, height_in: res.height_in, width_out: res.width_out, height_out: res.height_out,
        format_in: res.format_in, format: res.format,
        download_ms: res.download_ms, resize_ms: res.resize_ms, upload_ms: res.upload_ms, action_upload_ms: res.upload_ms,
        activation_id: record.activation ? record.activation.id : null
    };
}

/**
 * The metrics line of an image that failed (outcome "error", with the failure's code).
 *
 * @param failed the message: {event, failure: {code, message, gave_up}, activation, invoke_attempts}
 * @param upload the flow's stamps of the upload of failed.event.key, if any
 * @param now t_failed
 */
function errorLine(failed, upload, now) {
    const ev = failed.event;
    const f = failed.failure || {};
    const mine = ev.trace_id ? ownUpload(upload, ev.trace_id) : [].concat(upload || []).slice(-1)[0] || null;
    const act = failed.activation || {};
    return {
        key: ev.key, trace_id: ev.trace_id || null, source_etag: ev.etag || null,
        attempts: (mine ? mine.attempts : 1) + (failed.invoke_attempts || 1) - 1,
        upload_attempts: mine ? mine.attempts : null, invoke_attempts: failed.invoke_attempts || null,
        outcome: 'error', code: f.code || 'unknown', error: f.message || null, gave_up: f.gave_up || null,
        t_upload_start: mine ? mine.t_upload_start : null, t_uploaded: mine ? mine.t_uploaded : null,
        t_event: ev.t_event, t_invoke_start: ev.t_invoke_start || null,
        t_action_start: act.start || null, t_action_end: act.end || null, t_webhook: null, t_failed: now,
        duration_ms: null, bucket: ev.bucket, activation_id: act.id || null
    };
}

/**
 * The metrics line of a version the action did not resize because a newer upload of the key
 * replaced it (outcome "superseded"): not a failure, and no dead letter.
 *
 * @param superseded the message: {event, result (the action's superseded result), activation, invoke_attempts}
 * @param upload the flow's stamps of the upload of superseded.event.key, if any
 */
function supersededLine(superseded, upload) {
    const ev = superseded.event;
    const res = superseded.result;
    const mine = ownUpload(upload, res.trace_id);
    return {
        key: ev.key, trace_id: res.trace_id, source_etag: res.source_etag || ev.etag || null,
        attempts: (mine ? mine.attempts : 1) + superseded.invoke_attempts - 1,
        upload_attempts: mine ? mine.attempts : null, invoke_attempts: superseded.invoke_attempts,
        outcome: 'superseded', found_at: res.found_at, current_etag: res.current_etag || null,
        repaired: res.repaired === true,
        t_upload_start: mine ? mine.t_upload_start : numOrNull(res.t_upload_start_ms),
        t_uploaded: mine ? mine.t_uploaded : numOrNull(res.t_uploaded_ms), t_event: ev.t_event,
        t_invoke_start: ev.t_invoke_start, t_action_start: numOrNull(res.t_action_start_ms),
        t_action_end: numOrNull(res.t_action_end_ms), t_webhook: null, t_done: null, duration_ms: null,
        key_out: res.key_out, bucket_out: res.bucket_out,
        activation_id: superseded.activation ? superseded.activation.id : null
    };
}

/** The dead letter of a failed image (on the DLQ topic): why, and the store's event record. */
function deadLetter(line, event) {
    return {
        reason: line.code, message: line.error, gave_up: line.gave_up, bucket: event.bucket, key: event.key,
        trace_id: line.trace_id, attempts: line.attempts, activation_id: line.activation_id,
        t_failed: line.t_failed, event: event.record
    };
}

/**
 * The metrics line of a Kafka record the pipeline cannot read (outcome "malformed").
 *
 * @param malformed {reason, t_event} from parseEvent; kafka msg.kafka; raw the record's value
 */
function malformedLine(malformed, kafka, raw) {
    const missing = raw === null || raw === undefined;
    return {
        key: null, trace_id: null, attempts: 0, outcome: 'malformed', code: 'malformed', error: malformed.reason,
        t_upload_start: null, t_uploaded: null, t_event: malformed.t_event, t_invoke_start: null, t_action_start: null,
        t_action_end: null, t_webhook: null, duration_ms: null,
        kafka_partition: kafka ? kafka.partition : null, kafka_offset: kafka ? kafka.offset : null,
        raw_bytes: missing ? 0 : Buffer.byteLength(String(raw), 'utf8'),
        raw_prefix: missing ? null : String(raw).slice(0, 200)
    };
}

/** The image's point on the dashboard chart (seconds). */
function chartPoint(line) {
    return { topic: 'end-to-end (s)', payload: line.duration_ms / 1000 };
}

/** The SLA threshold's point on the chart (seconds). */
function thresholdPoint(slaMs) {
    return { topic: 'SLA threshold (s)', payload: slaMs / 1000 };
}

function stamp(t) {
    return t === null || t === undefined ? '-' : new Date(t).toISOString();
}

/** The alert e-mail (the e-mail node's input) about an image that broke the SLA. */
function alertMail(line, slaMs) {
    const seconds = (line.duration_ms / 1000).toFixed(2);
    return {
        topic: 'SLA alert: ' + line.key + ' took ' + seconds + ' s',
        from: 'labkit-pipeline@lab.local',
        payload: [
            'The image ' + line.key + ' took ' + seconds + ' s from upload to resized output,',
            'over the SLA threshold of ' + (slaMs / 1000) + ' s.',
            '',
            'key:            ' + line.key,
            'output:         ' + line.bucket_out + '/' + line.key_out,
            'trace id:       ' + line.trace_id,
            'attempts:       ' + line.attempts,
            'finished at:    ' + new Date(line.t_done).toISOString(),
            '',
            'stage           started at',
            'upload          ' + stamp(line.t_upload_start),
            'uploaded        ' + stamp(line.t_uploaded),
            'event           ' + stamp(line.t_event),
            'invoke          ' + stamp(line.t_invoke_start),
            'action start    ' + stamp(line.t_action_start),
            'action end      ' + stamp(line.t_action_end),
            'webhook         ' + stamp(line.t_webhook),
            '',
            'download ' + line.download_ms + ' ms, resize ' + line.resize_ms + ' ms, write ' + line.upload_ms + ' ms;',
            line.bytes_in + ' bytes in, ' + line.bytes_out + ' bytes out (' + line.width_out + 'x' + line.height_out + ').',
            '',
            '-- the labkit pipeline (Node-RED)'
        ].join('\n')
    };
}

/**
 * One alert per image past the SLA: the e-mail when `line` took `slaMs` or longer and no alert
 * went out for its key and trace yet (then noted in `alerted`, flow context, as {at: now}),
 * else null.
 */
function slaAlert(line, slaMs, alerted, now) {
    const id = line.key + '\u0000' + line.trace_id;
    if (!(line.duration_ms >= slaMs) || alerted[id]) {
        return null;
    }
    alerted[id] = { at: now };
    return alertMail(line, slaMs);
}

module.exports = {
    metricsLine, errorLine, supersededLine, deadLetter, malformedLine, chartPoint, thresholdPoint, alertMail, slaAlert
};
