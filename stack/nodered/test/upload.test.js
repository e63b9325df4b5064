'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { steps, T0 } = require('./fixtures');

const body = Buffer.from([0xff, 0xd8, 0xff, 0xe0]);
const newId = () => '0123456789abcdef0123456789abcdef';

test('a good upload keeps what the PUT needs, and starts the retry state', () => {
    const checked = steps.checkUpload({ key: 'a/b/cat.png', trace_id: 'my-trace' }, { 'content-type': 'image/png' },
        body, T0, newId);
    assert.deepEqual(checked, {
        upload: { key: 'a/b/cat.png', trace_id: 'my-trace', content_type: 'image/png', bytes: 4, t_upload_start: T0 },
        retry: { attempt: 1, first_ms: T0 }
    });
});

test('without a trace id the flow makes one; without a content type it is octet-stream', () => {
    const checked = steps.checkUpload({ key: 'cat.jpg' }, {}, body, T0, newId);
    assert.equal(checked.upload.trace_id, newId());
    assert.equal(checked.upload.content_type, 'application/octet-stream');
    const long = steps.checkUpload({ key: 'k' }, { 'content-type': 'x/' + 'y'.repeat(300) }, body, T0, newId);
    assert.equal(long.upload.content_type.length, 200);
});

test('bad keys are refused with 400', () => {
    for (const key of [undefined, '', 'dir/', 'tab\there', 'nul\u0000', 'del\u007f', 'é'.repeat(513), ['a', 'b']]) {
        const checked = steps.checkUpload({ key: key }, {}, body, T0, newId);
        assert.equal(checked.reject.status, 400, JSON.stringify(key));
        assert.match(checked.reject.body.error, /^query parameter 'key' must be an S3 key/);
        assert.equal(checked.reject.body.key, typeof key === 'string' && key ? key : null);
    }
    assert.ok(steps.checkUpload({ key: 'a'.repeat(1024) }, {}, body, T0, newId).upload);
    assert.ok(steps.checkUpload({ key: 'spaces + %20 ünïcode' }, {}, body, T0, newId).upload);
});

test('a body that is not raw bytes is refused with 415', () => {
    for (const parsed of [{ a: 1 }, 'text', undefined]) {
        const checked = steps.checkUpload({ key: 'cat.jpg' }, {}, parsed, T0, newId);
        assert.deepEqual(checked.reject, { status: 415, body: {
            error: 'send the raw file as the body, with Content-Type image/* or application/octet-stream',
            key: 'cat.jpg' } });
    }
});

test('bad trace ids are refused with 400', () => {
    for (const traceId of ['has space', 'x'.repeat(129), 'tab\t', 'ü']) {
        const checked = steps.checkUpload({ key: 'cat.jpg', trace_id: traceId }, {}, body, T0, newId);
        assert.equal(checked.reject.status, 400);
        assert.match(checked.reject.body.error, /trace_id/);
    }
});

test('stored: metadata for the action, stamps for the join, the answers', () => {
    const { upload } = steps.checkUpload({ key: 'cat.jpg', trace_id: 't1' }, { 'content-type': 'image/jpeg' },
        body, T0, newId);
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

test('the 503 answer says why the retries stopped', () => {
    const upload = { key: 'cat.jpg', trace_id: 't1', t_upload_start: T0 };
    const retry = { attempt: 3, gave_up: 'gave up after 3 attempts' };
    assert.deepEqual(steps.uploadFailedAnswer(upload, retry, 'PUT cat.jpg to storage failed: ECONNREFUSED: x'), {
        error: 'PUT cat.jpg to storage failed: ECONNREFUSED: x', reason: 'gave up after 3 attempts', key: 'cat.jpg',
        trace_id: 't1', attempts: 3, t_upload_start: T0 });
    assert.equal(steps.uploadFailedAnswer(upload, retry, undefined).error, 'upload failed');
});
