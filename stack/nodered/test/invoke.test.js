'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { steps, T0, actionResult, activationRecord, actionError, invokedEvent, supersededResult } = require('./fixtures');

test('the invoke request: blocking, the activation record without its result, Basic auth', () => {
    const ev = invokedEvent('a/cat.png');
    const req = steps.invokeRequest(ev, { faasUrl: 'http://127.0.0.1:3233//', auth: 'uuid:key', action: undefined,
                                          timeoutMs: '5000' });
    assert.deepEqual(req, {
        url: 'http://127.0.0.1:3233/api/v1/namespaces/_/actions/resize?blocking=true&result=false',
        method: 'POST',
        headers: { 'Authorization': 'Basic ' + Buffer.from('uuid:key').toString('base64'),
                   'Content-Type': 'application/json' },
        requestTimeout: 5000,
        payload: { bucket: 'dit247', key: 'a/cat.png', etag: '0123abcd', trace_id: ev.trace_id,
                   t_event_ms: ev.t_event }
    });
    const other = steps.invokeRequest(ev, { faasUrl: 'http://h', auth: '', action: 'my action', timeoutMs: '' });
    assert.equal(other.url, 'http://h/api/v1/namespaces/_/actions/my%20action?blocking=true&result=false');
    assert.equal(other.requestTimeout, 75000);
});

test('a resized image is "ok", with its result and activation', () => {
    const result = actionResult('cat.png');
    const verdict = steps.classifyInvoke(200, activationRecord(result));
    assert.equal(verdict.outcome, 'ok');
    assert.equal(verdict.result, result);
    assert.deepEqual(verdict.activation, { id: 'a1b2c3d4e5f6', start: T0 + 290, end: T0 + 370, duration: 80 });
    assert.equal(verdict.failure, undefined);
    assert.deepEqual(steps.invokeStatus(verdict, 'cat.png'), { fill: 'green', shape: 'dot', text: 'ok cat.png' });
});

test('without an ETag in the event, the action resizes the version current at its read', () => {
    const ev = Object.assign(invokedEvent('a/cat.png'), { etag: '' });
    const payload = steps.invokeRequest(ev, { faasUrl: 'http://h', auth: 'u:k' }).payload;
    assert.equal('etag' in JSON.parse(JSON.stringify(payload)), false);
});

test('a superseded version is no failure: its own outcome, with the action\'s result', () => {
    const result = supersededResult('cat.png', 'read');
    const verdict = steps.classifyInvoke(200, activationRecord(result));
    assert.equal(verdict.outcome, 'superseded');
    assert.equal(verdict.result, result);
    assert.equal(verdict.failure, undefined);
    assert.equal(verdict.activation.id, 'a1b2c3d4e5f6');
    assert.deepEqual(steps.invokeStatus(verdict, 'cat.png'), { fill: 'grey', shape: 'ring', text: 'superseded cat.png' });
    const notQuite = steps.classifyInvoke(200, activationRecord(Object.assign(actionResult('cat.png'), { superseded: 'yes' })));
    assert.equal(notQuite.outcome, 'ok'); // only a true flag
});

test('a bad image is an application error: failed for good, not retried', () => {
    const record = activationRecord(actionError('truncated', 'image file is truncated'), false, 'application error');
    const verdict = steps.classifyInvoke(502, record);
    assert.equal(verdict.outcome, 'failed');
    assert.deepEqual(verdict.failure, { code: 'truncated', message: 'image file is truncated', retryable: false });
    assert.equal(verdict.activation.id, 'a1b2c3d4e5f6');
    assert.deepEqual(steps.invokeStatus(verdict, 'k'), { fill: 'red', shape: 'dot', text: 'truncated k' });
});

test('an application error the action marks retryable (its store was down) is retried', () => {
    const record = activationRecord(actionError('storage_error', 'connection refused', true), false,
        'application error');
    const verdict = steps.classifyInvoke(502, record);
    assert.equal(verdict.outcome, 'retry');
    assert.deepEqual(verdict.failure, { code: 'storage_error', message: 'connection refused', retryable: true });
    assert.deepEqual(steps.invokeStatus(verdict, 'k'), { fill: 'yellow', shape: 'ring', text: 'storage_error k' });
    const bare = steps.classifyInvoke(502, activationRecord({}, false, 'application error'));
    assert.deepEqual(bare.failure, { code: 'application_error', message: '', retryable: false });
});

test('a 200 whose result holds an error is no success', () => {
    const verdict = steps.classifyInvoke(200, activationRecord(actionError('corrupt', 'bad'), true));
    assert.equal(verdict.outcome, 'failed');
    assert.equal(verdict.failure.code, 'success'); // the activation's status names it
});

test('no answer: a timeout or an unreachable FaaS, both retried', () => {
    const timeout = steps.classifyInvoke(undefined, 'Error: ETIMEDOUT');
    assert.deepEqual(timeout, { outcome: 'retry', activation: undefined,
        failure: { code: 'invoke_timeout', message: 'Error: ETIMEDOUT', retryable: true } });
    assert.equal(steps.classifyInvoke(undefined, 'request timeout').failure.code, 'invoke_timeout');
    const refused = steps.classifyInvoke(undefined, 'RequestError: connect ECONNREFUSED 127.0.0.1:3233');
    assert.equal(refused.failure.code, 'faas_unreachable');
    assert.equal(refused.outcome, 'retry');
    assert.equal(steps.classifyInvoke(undefined, 'x'.repeat(900)).failure.message.length, 500);
});

test('platform answers: 202 and 5xx, 408 and 429 retried; other 4xx failed', () => {
    const accepted = steps.classifyInvoke(202, { activationId: 'abc' });
    assert.equal(accepted.outcome, 'retry');
    assert.deepEqual(accepted.failure, { code: 'invoke_timeout',
        message: 'the blocking invoke returned 202: the activation outlived the wait', retryable: true });
    assert.equal(accepted.activation.id, 'abc');
    const crashed = steps.classifyInvoke(500, activationRecord({ error: 'The action did not return a dictionary.' },
        false, 'action developer error'));
    assert.deepEqual(crashed.failure, { code: 'action_developer_error',
        message: 'The action did not return a dictionary.', retryable: true });
    const limits = steps.classifyInvoke(502, activationRecord({ stats: 1 }, false, 'whisk internal error'));
    assert.deepEqual(limits.failure, { code: 'whisk_internal_error', message: '{"stats":1}', retryable: true });
    for (const status of [408, 429, 503]) {
        const verdict = steps.classifyInvoke(status, { error: 'busy', code: 'x' });
        assert.deepEqual(verdict.failure, { code: 'faas_http_' + status, message: 'busy', retryable: true });
    }
    const denied = steps.classifyInvoke(401, { error: 'The supplied authentication is invalid', code: 'c' });
    assert.deepEqual(denied.failure, { code: 'faas_http_401', message: 'The supplied authentication is invalid',
                                       retryable: false });
    assert.equal(denied.outcome, 'failed');
    assert.equal(steps.classifyInvoke(404, 'Not Found').failure.message, 'Not Found');
    assert.equal(steps.classifyInvoke(404, 'Not Found').activation, undefined);
});

test('retryable statuses', () => {
    assert.deepEqual([undefined, 200, 202, 400, 404, 408, 429, 500, 502, 504].map(steps.retryableStatus),
        [true, false, true, false, false, true, true, true, true, true]);
});
