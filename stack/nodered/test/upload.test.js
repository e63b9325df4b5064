'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { steps, T0 } = require('./fixtures');

const http = require('node:http');

const body = Buffer.from([0xff, 0xd8, 0xff, 0xe0]);
const newId = () => '0123456789abcdef0123456789abcdef';
const LABKIT = { 'x-requested-with': 'labkit' }; // what labkit's client sends

/** A request as the flow gets it (msg.req): its query, headers and URL. */
function request(query, headers = LABKIT, url = undefined) {
    const search = new URLSearchParams(Object.entries(query).filter(([, v]) => typeof v === 'string')).toString();
    return { query: query, headers: headers, originalUrl: url || '/upload?' + search };
}

test('a good upload keeps what the PUT needs, and starts the retry state', () => {
    const checked = steps.checkUpload(request({ key: 'a/b/cat.png', trace_id: 'my-trace' },
        { 'content-type': 'image/png' }), body, T0, newId);
    assert.deepEqual(checked, {
        upload: { key: 'a/b/cat.png', trace_id: 'my-trace', content_type: 'image/png', bytes: 4, t_upload_start: T0 },
        retry: { attempt: 1, first_ms: T0 }
    });
});

test('without a trace id the flow makes one; without a content type it is octet-stream', () => {
    const checked = steps.checkUpload(request({ key: 'cat.jpg' }), body, T0, newId);
    assert.equal(checked.upload.trace_id, newId());
    assert.equal(checked.upload.content_type, 'application/octet-stream');
    const long = steps.checkUpload(request({ key: 'k' }, { 'content-type': 'x/' + 'y'.repeat(300) }), body, T0, newId);
    assert.equal(long.upload.content_type.length, 200);
});

test('bad keys are refused with 400, saying what is wrong and what to do', () => {
    const cases = [[undefined, /is missing or empty/], ['', /is missing or empty/], ['dir/', /empty segment/],
        ['tab\there', /control character or line separator \(U\+0009/], ['nul\u0000', /U\+0000/], ['del\u007f', /U\+007F/],
        ['é'.repeat(513), /segment of 1026 bytes/], [['a', 'b'], /must be given once/],
        ['./p1/./dot.jpg', /'\.' or '\.\.' segment/], ['/x.jpg', /starts with '\/'/], ['//p1/x.jpg', /starts with/],
        ['a'.repeat(1024), /segment of 1024 bytes/]];
    for (const [key, why] of cases) {
        const checked = steps.checkUpload(request({ key: key }), body, T0, newId);
        assert.equal(checked.reject.status, 400, JSON.stringify(key));
        assert.match(checked.reject.body.error, /^query parameter 'key' /);
        assert.match(checked.reject.body.error, why);
        assert.equal(checked.reject.body.key, typeof key === 'string' && key ? key : null);
    }
    assert.ok(steps.checkUpload(request({ key: 'spaces + %20 ünïcode' }), body, T0, newId).upload);
});

test('a key that is not UTF-8 once percent-decoded is refused, not stored as sent', () => {
    // Express's parser keeps '%FF.jpg' as it came; the raw URL tells.
    for (const raw of ['%FF.jpg', 'caf%C3%A9%FF', '100%.jpg', '%ED%A0%80']) {
        const checked = steps.checkUpload(request({ key: raw }, LABKIT, '/upload?key=' + raw), body, T0, newId);
        assert.equal(checked.reject.status, 400, raw);
        assert.match(checked.reject.body.error, /not valid UTF-8 once percent-decoded/);
    }
    const fine = steps.checkUpload(request({ key: 'café.jpg' }, LABKIT, '/upload?key=caf%C3%A9.jpg'), body, T0, newId);
    assert.equal(fine.upload.key, 'café.jpg');
});

test('a cross-site browser request is refused with 403', () => {
    const host = '127.0.0.1:1880';
    const refused = [
        { host: host, origin: 'https://evil.example', 'content-type': 'image/jpeg', 'x-requested-with': 'x' },
        { host: host, origin: 'null', 'content-type': 'image/jpeg' },
        { host: host, 'sec-fetch-site': 'cross-site', 'content-type': 'image/jpeg' },
        { host: host, 'content-type': 'text/plain' }, // a form's post: no custom header
        { host: host, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' },
        { host: host, 'content-type': 'multipart/form-data; boundary=x' },
        { host: host } // a script's no-cors post of a blob without a type
    ];
    for (const headers of refused) {
        const checked = steps.checkUpload(request({ key: 'cat.jpg' }, headers), body, T0, newId);
        assert.equal(checked.reject && checked.reject.status, 403, JSON.stringify(headers));
        assert.match(checked.reject.body.error, /refused/);
    }
    const allowed = [
        { host: host, 'content-type': 'image/jpeg' }, // curl -H 'Content-Type: image/jpeg'
        { host: host, origin: 'http://127.0.0.1:1880', 'content-type': 'text/plain', 'x-requested-with': 'x' },
        { host: host, 'sec-fetch-site': 'same-origin', 'content-type': 'image/png' },
        { host: host, 'content-type': 'text/plain', 'x-requested-with': 'labkit' }
    ];
    for (const headers of allowed) {
        assert.ok(steps.checkUpload(request({ key: 'cat.jpg' }, headers), body, T0, newId).upload,
            JSON.stringify(headers));
    }
    // a bad key is a 400 first: the pipeline prober's empty POST expects it
    assert.equal(steps.checkUpload(request({}, {}), body, T0, newId).reject.status, 400);
});

test('a body that is not raw bytes, or a form, is refused with 415', () => {
    for (const parsed of [{ a: 1 }, 'text', undefined]) {
        const checked = steps.checkUpload(request({ key: 'cat.jpg' }), parsed, T0, newId);
        assert.deepEqual(checked.reject, { status: 415, body: {
            error: 'send the raw file as the body, with Content-Type image/* or application/octet-stream',
            key: 'cat.jpg' } });
    }
    const form = steps.checkUpload(request({ key: 'cat.jpg' },
        Object.assign({ 'content-type': 'multipart/form-data; boundary=x' }, LABKIT)), body, T0, newId);
    assert.equal(form.reject.status, 415);
    assert.match(form.reject.body.error, /multipart body is a form/);
});

test('bad trace ids are refused with 400', () => {
    for (const traceId of ['has space', 'x'.repeat(129), 'tab\t', 'ü']) {
        const checked = steps.checkUpload(request({ key: 'cat.jpg', trace_id: traceId }), body, T0, newId);
        assert.equal(checked.reject.status, 400);
        assert.match(checked.reject.body.error, /trace_id/);
    }
});

test('stored: metadata for the action, stamps for the join, the answers', () => {
    const { upload } = steps.checkUpload(request({ key: 'cat.jpg', trace_id: 't1' },
        { 'content-type': 'image/jpeg' }), body, T0, newId);
    assert.deepEqual(steps.uploadMetadata(upload),
        { 'Content-Type': 'image/jpeg', 'trace-id': 't1', 't-upload-start': String(T0) });
    steps.markUploaded(upload, { etag: '"abc"', versionId: null }, 2, T0 + 50);
    assert.equal(upload.etag, 'abc');
    assert.equal(upload.attempts, 2);
    assert.equal(upload.t_uploaded, T0 + 50);
    assert.deepEqual(steps.uploadStamps(upload, T0 + 51),
        { trace_id: 't1', etag: 'abc', t_upload_start: T0, t_uploaded: T0 + 50, attempts: 2, at: T0 + 51 });
    assert.deepEqual(steps.uploadAnswer(upload),
        { key: 'cat.jpg', trace_id: 't1', attempts: 2, t_upload_start: T0, t_uploaded: T0 + 50 });
    assert.equal(steps.markUploaded({}, undefined, 1, T0).etag, null);
});

test('the uploads of a key are remembered oldest first, at most 32', () => {
    const uploads = { 'dog.jpg': [{ trace_id: 'd', at: T0 }] };
    for (let i = 0; i < 40; i++) {
        steps.rememberUpload(uploads, { key: 'cat.jpg', trace_id: 't' + i, etag: 'abc', attempts: 1 }, T0 + i);
    }
    assert.deepEqual(uploads['cat.jpg'].map(u => u.trace_id), Array.from({ length: 32 }, (_, i) => 't' + (i + 8)));
    assert.deepEqual(uploads['cat.jpg'][0], steps.uploadStamps({ trace_id: 't8', etag: 'abc', attempts: 1 }, T0 + 8));
    assert.deepEqual(uploads['dog.jpg'], [{ trace_id: 'd', at: T0 }]); // other keys untouched
    const single = { 'cat.jpg': { trace_id: 'old', at: T0 } }; // a lone entry, as an older flow kept it
    steps.rememberUpload(single, { key: 'cat.jpg', trace_id: 'new' }, T0 + 1);
    assert.deepEqual(single['cat.jpg'].map(u => u.trace_id), ['old', 'new']);
});

test('the 503 answer says why the retries stopped', () => {
    const upload = { key: 'cat.jpg', trace_id: 't1', t_upload_start: T0 };
    const retry = { attempt: 3, gave_up: 'gave up after 3 attempts' };
    assert.deepEqual(steps.uploadFailedAnswer(upload, retry, 'PUT cat.jpg to storage failed: ECONNREFUSED: x'), {
        error: 'PUT cat.jpg to storage failed: ECONNREFUSED: x', reason: 'gave up after 3 attempts', key: 'cat.jpg',
        trace_id: 't1', attempts: 3, t_upload_start: T0 });
    assert.equal(steps.uploadFailedAnswer(upload, retry, undefined).error, 'upload failed');
});

/** An S3Error as minio-js throws it, with the store's status noted by withStoreStatus. */
function s3Error(status, code, message) {
    const err = Object.assign(new Error(message), { code: code, storeStatus: status });
    err.name = 'S3Error';
    return err;
}

test('a store error is permanent when no retry can succeed: a 4xx but 408 and 429, or a malformed request', () => {
    const permanent = [
        [s3Error(409, 'ExistingObjectIsDirectory', 'Existing Object is a directory.'), 409],
        [s3Error(400, 'KeyTooLongError', 'Your key is too long.'), 400],
        [s3Error(403, 'AccessDenied', 'Access Denied.'), 403],
        [s3Error(404, 'NoSuchBucket', 'The specified bucket does not exist'), 404],
        [Object.assign(new Error('Invalid object name: x'), { name: 'InvalidObjectNameError' }), 400],
        [new URIError('URI malformed'), 400],
        [Object.assign(new TypeError('Invalid character in header'), { code: 'ERR_INVALID_CHAR' }), 400],
        [Object.assign(new TypeError('Request path contains unescaped characters'),
            { code: 'ERR_UNESCAPED_CHARACTERS' }), 400]
    ];
    for (const [err, status] of permanent) {
        const failure = steps.storeFailure(err);
        assert.equal(failure.permanent, true, failure.reason);
        assert.equal(failure.status, status, failure.reason);
    }
    assert.deepEqual(steps.storeFailure(s3Error(409, 'ExistingObjectIsDirectory', 'Existing Object is a directory.')),
        { permanent: true, status: 409, code: 'ExistingObjectIsDirectory',
            reason: '409 ExistingObjectIsDirectory: Existing Object is a directory.' });
});

test('everything else is transient and keeps its retries: 5xx, 408, 429, retryable S3 codes, no answer', () => {
    const transient = [
        Object.assign(new Error('Request failed after 1 retries: Error: Retryable HTTP status: 500'), { storeStatus: 500 }),
        Object.assign(new Error('Retryable HTTP status: 503'), { storeStatus: 503 }),
        Object.assign(new Error('Retryable HTTP status: 408'), { storeStatus: 408 }),
        Object.assign(new Error('Retryable HTTP status: 429'), { storeStatus: 429 }),
        s3Error(400, 'RequestTimeout', 'Your socket connection to the server was not read from'),
        s3Error(409, 'OperationAborted', 'A conflicting conditional operation is in progress'),
        Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:7070'), { code: 'ECONNREFUSED' }),
        Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }),
        // failures on the way, not refused arguments: TLS, sockets, streams
        Object.assign(new Error('Client network socket disconnected'), { code: 'ERR_SSL_WRONG_VERSION_NUMBER' }),
        Object.assign(new Error('TLS handshake timeout'), { code: 'ERR_TLS_HANDSHAKE_TIMEOUT' }),
        Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }),
        Object.assign(new Error('Socket closed'), { code: 'ERR_SOCKET_CLOSED' }),
        new Error('something odd'), undefined
    ];
    for (const err of transient) {
        assert.equal(steps.storeFailure(err).permanent, false, String(err && err.message));
    }
    assert.equal(steps.storeFailure(transient[0]).status, 500);
    assert.equal(steps.storeFailure(transient[6]).status, null);
});

test('the answer when there is no next attempt: the store\'s own 4xx for a permanent error, else 503', () => {
    const upload = { key: 'd', trace_id: 't1', t_upload_start: T0 };
    const failure = steps.storeFailure(s3Error(409, 'ExistingObjectIsDirectory', 'Existing Object is a directory.'));
    const retry = steps.nextAttempt({ attempt: 1, first_ms: T0, permanent: failure },
        steps.retryPolicy({ policy: 'exponential' }), T0 + 5).retry;
    assert.equal(steps.uploadFailedStatus(retry), 409);
    assert.deepEqual(steps.uploadFailedAnswer(upload, retry, 'PUT d to storage failed: ' + failure.reason), {
        error: 'PUT d to storage failed: 409 ExistingObjectIsDirectory: Existing Object is a directory.',
        reason: 'not retried after attempt 1: a permanent error (409)', key: 'd', trace_id: 't1', attempts: 1,
        t_upload_start: T0, store_status: 409, store_code: 'ExistingObjectIsDirectory' });
    assert.equal(steps.uploadFailedStatus({ attempt: 10, gave_up: 'gave up after 10 attempts' }), 503);
});

test('the store\'s HTTP status reaches the error: withStoreStatus and the client\'s transport', async () => {
    const server = http.createServer((req, res) => {
        res.writeHead(Number(req.url.slice(1)), { 'Content-Type': 'application/xml' });
        res.end('<Error><Code>X</Code></Error>');
    });
    await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
    const transport = steps.statusNotingTransport(http);
    const get = status => new Promise((resolve, reject) => {
        transport.request({ host: '127.0.0.1', port: server.address().port, path: '/' + status }, res => {
            res.resume();
            res.on('end', () => (status < 300 ? resolve('ok') : reject(new Error('refused'))));
        }).end();
    });
    try {
        const answers = await Promise.allSettled([409, 200, 503].map(s => steps.withStoreStatus(() => get(s))));
        assert.equal(answers[0].reason.storeStatus, 409); // each call sees its own answer
        assert.equal(answers[1].value, 'ok');
        assert.equal(answers[2].reason.storeStatus, 503);
        await assert.rejects(steps.withStoreStatus(async () => {
            throw new Error('no answer');
        }), err => err.storeStatus === undefined);
    } finally {
        server.close();
    }
});

test('storeUpload: the PUT\'s answer, or its failure sorted', async () => {
    const upload = { key: 'a.jpg', trace_id: 't', content_type: 'image/jpeg', t_upload_start: T0 };
    const store = (putObject) => ({ minio: { Client: class { putObject(...args) {
        return putObject(...args);
    } } }, url: 'http://127.0.0.1:' + (7000 + Math.floor(Math.random() * 999)), accessKey: 'a', secretKey: 's',
    bucket: 'dit247' });
    const stored = await steps.storeUpload(store(async (bucket, key, data, size, meta) => {
        assert.deepEqual([bucket, key, size, meta['trace-id']], ['dit247', 'a.jpg', 4, 't']);
        return { etag: '"e1"' };
    }), upload, body);
    assert.deepEqual(stored, { stored: { etag: '"e1"' } });
    const failed = await steps.storeUpload(store(async () => {
        throw s3Error(400, 'KeyTooLongError', 'Your key is too long.');
    }), upload, body);
    assert.equal(failed.failure.permanent, true);
    const broken = await steps.storeUpload(Object.assign(store(null), { minio: undefined }), upload, body);
    assert.equal(broken.failure.permanent, false); // a missing library: as before, retried
});
