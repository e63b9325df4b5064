/**
 * Stage 1, upload: POST /upload?key=K&trace_id=T stores the body in the upload bucket.
 *
 * Before the flow sees a request, settings.js has let it through the upload door (intake.js:
 * uploads in flight, body size, stalled senders). Here: the request's checks, the PUT, and
 * the answers.
 */
'use strict';

const { errText, unquote, s3client, withStoreStatus } = require('./shared');
const { keyProblem, decodesStrictly, rawQueryValues } = require('./keys');

const BAD_BODY = 'send the raw file as the body, with Content-Type image/* or application/octet-stream';
const FORM_BODY = 'a multipart body is a form, not a file: ' + BAD_BODY;
const BAD_TRACE_ID = "query parameter 'trace_id' must be 1..128 printable ASCII characters without spaces";
const BAD_ENCODING = "query parameter 'key' is not valid UTF-8 once percent-decoded (or has a '%' that starts " +
    'no %XX escape): percent-encode the UTF-8 bytes of the key';
// The header a browser form cannot send (and a cross-site script only after a CORS preflight,
// which brings an Origin header): labkit's client sends it.
const UPLOAD_HEADER = 'x-requested-with';
// Content types a browser sends across sites without a preflight: a form's, or none at all.
const FORM_TYPES = new Set(['', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data']);
// Uploads of one key remembered for the join (rememberUpload): re-uploads before their events are handled.
const MAX_UPLOADS_PER_KEY = 32;
// Store errors that are worth a retry although their status is a 4xx.
const TRANSIENT_S3_CODES = new Set(['RequestTimeout', 'RequestTimeTooSkewed', 'OperationAborted', 'SlowDown',
    'Throttling']);

/** The media type of a Content-Type header, lower case, without parameters ("" when none). */
function mediaType(contentType) {
    return String(contentType || '').split(';')[0].trim().toLowerCase();
}

/** Whether the Origin header names this server (the Host the request was sent to). */
function sameOrigin(origin, host) {
    try {
        return new URL(origin).host === String(host || '').toLowerCase();
    } catch (err) {
        return false; // "null" (a sandboxed page, a file) or not a URL
    }
}

/**
 * Why a request looks like a browser's cross-site request, or null.
 *
 * A page on another site can make a browser POST here: a form (text/plain, urlencoded,
 * multipart), or a script. The browser names the page's site in Origin (and Sec-Fetch-Site);
 * a form cannot add a header such as X-Requested-With. A script can, after a CORS preflight,
 * which Node-RED's admin app grants for every path (Access-Control-Allow-Origin: *): so the
 * Origin check is the one that stops scripts, the header the one that stops old browsers' forms.
 */
function crossSiteProblem(headers) {
    const h = headers || {};
    if (h.origin !== undefined && !sameOrigin(h.origin, h.host)) {
        return 'cross-site request refused: Origin ' + JSON.stringify(String(h.origin).slice(0, 200)) +
            ' is not this server (' + String(h.host || '') + '); upload from labkit, curl, or a page of this server';
    }
    const site = h['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin' && site !== 'none') {
        return 'cross-site request refused: the browser says Sec-Fetch-Site: ' + String(site).slice(0, 40) +
            '; upload from labkit, curl, or a page of this server';
    }
    if (FORM_TYPES.has(mediaType(h['content-type'])) && h[UPLOAD_HEADER] === undefined) {
        return "a form's request refused: with Content-Type " + (mediaType(h['content-type']) || '(none)') +
            ', also send the header X-Requested-With (any value), which a browser form cannot send';
    }
    return null;
}

/** Why the request's key is refused (the whole sentence), or null. */
function keyRefusal(query, url) {
    const key = query.key;
    if (typeof key === 'string' && !rawQueryValues(url, 'key').every(decodesStrictly)) {
        return BAD_ENCODING;
    }
    const problem = keyProblem(key);
    return problem ? "query parameter 'key' " + problem : null;
}

/**
 * Check an upload request, in this order: the key (400), a cross-site request (403), the
 * body (415), the trace id (400).
 *
 * @param req msg.req: its query, headers and URL (originalUrl or url)
 * @param body msg.payload (a Buffer when it is a file)
 * @param newTraceId makes a trace id when the request brings none
 * @returns {reject: {status, body}} for a bad request, else {upload, retry}: what the PUT needs
 *          and the retry state of its first attempt
 */
function checkUpload(req, body, now, newTraceId) {
    const query = (req && req.query) || {};
    const headers = (req && req.headers) || {};
    const key = typeof query.key === 'string' ? query.key : '';
    const reject = (status, error) => ({ reject: { status: status, body: { error: error, key: key || null } } });
    const badKey = keyRefusal(query, req && (req.originalUrl || req.url));
    if (badKey) {
        return reject(400, badKey);
    }
    const crossSite = crossSiteProblem(headers);
    if (crossSite) {
        return reject(403, crossSite);
    }
    if (!Buffer.isBuffer(body) || mediaType(headers['content-type']).startsWith('multipart/')) {
        return reject(415, Buffer.isBuffer(body) ? FORM_BODY : BAD_BODY);
    }
    let traceId = typeof query.trace_id === 'string' ? query.trace_id : '';
    if (traceId && !/^[\x21-\x7e]{1,128}$/.test(traceId)) {
        return reject(400, BAD_TRACE_ID);
    }
    if (!traceId) {
        traceId = newTraceId();
    }
    const contentType = String(headers['content-type'] || 'application/octet-stream').slice(0, 200);
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

/**
 * Remember an upload's stamps under its key (flow context "uploads", changed in place): a list,
 * oldest first, so that when a key is uploaded again before its first event is handled, each
 * event finds its own upload (trace.js claims the oldest one left). At most
 * MAX_UPLOADS_PER_KEY are kept (the oldest are dropped); the join's sweep drops old ones.
 */
function rememberUpload(uploads, upload, now) {
    const list = [].concat(uploads[upload.key] || []);
    list.push(uploadStamps(upload, now));
    uploads[upload.key] = list.slice(-MAX_UPLOADS_PER_KEY);
    return uploads;
}

/** The 200 answer's body. */
function uploadAnswer(upload) {
    return {
        key: upload.key, trace_id: upload.trace_id, attempts: upload.attempts,
        t_upload_start: upload.t_upload_start, t_uploaded: upload.t_uploaded
    };
}

// Node's codes for arguments it refuses before sending anything. Its other ERR_ codes (TLS, sockets,
// streams: ERR_SSL_*, ERR_TLS_*, ERR_SOCKET_*, ERR_STREAM_PREMATURE_CLOSE) are failures on the way.
const REFUSED_ARGUMENT = /^ERR_(INVALID_|UNESCAPED_CHARACTERS$|HTTP_INVALID_|OUT_OF_RANGE$)/;

/** Whether `err` comes from a request that was never sent: minio-js or Node refused its arguments. */
function malformed(err) {
    return /^Invalid\w*Error$/.test(err.name) || err.name === 'URIError' || REFUSED_ARGUMENT.test(String(err.code));
}

/**
 * Sort a failed PUT: permanent (no retry can succeed) or transient.
 *
 * Permanent: the store answered 4xx other than 408 and 429 (and other than the S3 codes that
 * mean "try again", such as RequestTimeout), or the request was malformed and never sent.
 * Transient: everything else (5xx, 408, 429, connection errors, timeouts), as before.
 *
 * @param err what the PUT threw; err.storeStatus is the store's HTTP status (withStoreStatus)
 * @returns {permanent, status, code, reason}: the store's status (400 for a malformed request,
 *          null when the store did not answer), its S3 error code, and one line saying why
 */
function storeFailure(err) {
    const e = err || {};
    const code = typeof e.code === 'string' ? e.code : null;
    const status = Number.isInteger(e.storeStatus) ? e.storeStatus : null;
    const text = errText(code ? e : { message: e.message || e });
    if (status !== null) {
        const permanent = status >= 400 && status < 500 && status !== 408 && status !== 429 &&
            !TRANSIENT_S3_CODES.has(code);
        return { permanent: permanent, status: status, code: code, reason: status + ' ' + text };
    }
    if (malformed(e)) {
        return { permanent: true, status: 400, code: code, reason: 'a malformed request, never sent: ' + text };
    }
    // No answer seen. minio-js throws an S3Error only for an answer it does not retry itself.
    const refused = e.name === 'S3Error';
    return { permanent: refused, status: refused ? 502 : null, code: code, reason: text };
}

/**
 * PUT the upload's body into the store.
 *
 * @param store {minio, url, accessKey, secretKey, bucket}: the minio library, the endpoint,
 *        its account and the bucket
 * @returns {stored} (minio's answer: etag, versionId) or {failure} (see storeFailure)
 */
async function storeUpload(store, upload, body) {
    try {
        const s3 = s3client(store.minio, store.url, store.accessKey, store.secretKey);
        return { stored: await withStoreStatus(() => s3.putObject(store.bucket, upload.key, body, body.length,
            uploadMetadata(upload))) };
    } catch (err) {
        return { failure: storeFailure(err) };
    }
}

/** The status to answer once the retries gave up: the store's own for a permanent error, else 503. */
function uploadFailedStatus(retry) {
    return retry && retry.permanent ? retry.permanent.status : 503;
}

/** The answer's body once the retries gave up (or were not tried: store_status says the store's answer). */
function uploadFailedAnswer(upload, retry, error) {
    const answer = {
        error: error || 'upload failed', reason: retry.gave_up, key: upload.key,
        trace_id: upload.trace_id, attempts: retry.attempt, t_upload_start: upload.t_upload_start
    };
    if (retry.permanent) {
        answer.store_status = retry.permanent.status;
        answer.store_code = retry.permanent.code;
    }
    return answer;
}

module.exports = {
    checkUpload, crossSiteProblem, uploadMetadata, markUploaded, uploadStamps, rememberUpload, uploadAnswer, storeFailure, storeUpload,
    uploadFailedStatus, uploadFailedAnswer
};
