/**
 * Stage 1, upload: POST /upload?key=K&trace_id=T stores the body in the upload bucket.
 */
'use strict';

const { unquote } = require('./shared');

const BAD_KEY = "query parameter 'key' must be an S3 key (1..1024 bytes, no control characters, not ending in '/')";
const BAD_BODY = 'send the raw file as the body, with Content-Type image/* or application/octet-stream';
const BAD_TRACE_ID = "query parameter 'trace_id' must be 1..128 printable ASCII characters without spaces";

/**
 * Check an upload request.
 *
 * @param query msg.req.query; headers msg.req.headers; body msg.payload (a Buffer when it is a file)
 * @param newTraceId makes a trace id when the request brings none
 * @returns {reject: {status, body}} for a bad request, else {upload, retry}: what the PUT needs
 *          and the retry state of its first attempt
 */
function checkUpload(query, headers, body, now, newTraceId) {
    const q = query || {};
    const key = typeof q.key === 'string' ? q.key : '';
    const reject = (status, error) => ({ reject: { status: status, body: { error: error, key: key || null } } });
    if (!key || Buffer.byteLength(key, 'utf8') > 1024 || /[\x00-\x1f\x7f]/.test(key) || key.endsWith('/')) {
        return reject(400, BAD_KEY);
    }
    if (!Buffer.isBuffer(body)) {
        return reject(415, BAD_BODY);
    }
    let traceId = typeof q.trace_id === 'string' ? q.trace_id : '';
    if (traceId && !/^[\x21-\x7e]{1,128}$/.test(traceId)) {
        return reject(400, BAD_TRACE_ID);
    }
    if (!traceId) {
        traceId = newTraceId();
    }
    const contentType = String((headers || {})['content-type'] || 'application/octet-stream').slice(0, 200);
    return {
        upload: { key: key, trace_id: traceId, content_type: contentType, bytes: body.length, t_upload_start: now },
        retry: { attempt: 1, first_ms: now }
    };
}

/** The object's metadata: the content type, the trace id and the upload's start (read back by the action). */
function uploadMetadata(upload) {
    return {
        'Content-Type': upload.content_type,
        'trace-id': upload.trace_id,
        't-upload-start': String(upload.t_upload_start)
    };
}

/** Note on `upload` that the PUT succeeded: when, after how many attempts, and the stored ETag. */
function markUploaded(upload, stored, attempts, now) {
    upload.t_uploaded = now;
    upload.attempts = attempts;
    upload.etag = unquote(stored && stored.etag) || null;
    return upload;
}

/** What the flow remembers of an upload, by key, for the join (flow context "uploads"). */
function uploadStamps(upload, now) {
    return {
        trace_id: upload.trace_id, etag: upload.etag, t_upload_start: upload.t_upload_start,
        t_uploaded: upload.t_uploaded, attempts: upload.attempts, at: now
    };
}

/** The 200 answer's body. */
function uploadAnswer(upload) {
    return {
        key: upload.key, trace_id: upload.trace_id, attempts: upload.attempts,
        t_upload_start: upload.t_upload_start, t_uploaded: upload.t_uploaded
    };
}

/** The 503 answer's body once the retries gave up. */
function uploadFailedAnswer(upload, retry, error) {
    return {
        error: error || 'upload failed', reason: retry.gave_up, key: upload.key,
        trace_id: upload.trace_id, attempts: retry.attempt, t_upload_start: upload.t_upload_start
    };
}

module.exports = { checkUpload, uploadMetadata, markUploaded, uploadStamps, uploadAnswer, uploadFailedAnswer };
