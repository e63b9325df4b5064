/**
 * Stage 3, invoke: the blocking invoke of the resize action through the FaaS REST API
 * (OpenWhisk's), and what its answer means.
 */
'use strict';

const { num } = require('./shared');

/**
 * The http request node's input for one invoke of the action on `event`'s object, at the
 * version the event names (its ETag: the action reads that version or reports it superseded).
 *
 * @param settings {faasUrl, auth ("uuid:key"), action (default "resize"), timeoutMs (default 75000)}
 * @returns {url, method, headers, requestTimeout, payload} to set on the message
 */
function invokeRequest(event, settings) {
    const base = String(settings.faasUrl || '').replace(/\/+$/, '');
    const action = encodeURIComponent(settings.action || 'resize');
    return {
        url: base + '/api/v1/namespaces/_/actions/' + action + '?blocking=true&result=false',
        method: 'POST',
        headers: {
            'Authorization': 'Basic ' + Buffer.from(String(settings.auth || ''), 'utf8').toString('base64'),
            'Content-Type': 'application/json'
        },
        requestTimeout: num(settings.timeoutMs, 75000),
        payload: { bucket: event.bucket, key: event.key, etag: event.etag || undefined, trace_id: event.trace_id,
                   t_event_ms: event.t_event }
    };
}

/** Is an HTTP status (or a missing one: no answer at all) worth another attempt? */
function retryableStatus(status) {
    return typeof status !== 'number' || status >= 500 || status === 202 || status === 429 || status === 408;
}

/** The failure {code, message} of an answer that is neither a success nor an application error. */
function platformFailure(status, payload, body, response) {
    if (typeof status !== 'number') { // no answer: the http request node's error text is the payload
        const timeout = /TIMEDOUT|timeout/i.test(String(status) + ' ' + String(payload));
        return { code: timeout ? 'invoke_timeout' : 'faas_unreachable', message: String(payload).slice(0, 500) };
    }
    if (status === 202) {
        return { code: 'invoke_timeout', message: 'the blocking invoke returned 202: the activation outlived the wait' };
    }
    if (response && response.status) {
        const result = response.result;
        return {
            code: String(response.status).replace(/\W+/g, '_'),
            message: String((result && (result.error || JSON.stringify(result))) || '').slice(0, 500)
        };
    }
    return { code: 'faas_http_' + status, message: String((body && body.error) || payload || '').slice(0, 500) };
}

/**
 * Sort the invoke's answer.
 *
 * - "ok": the action resized the image (`result` is its result);
 * - "superseded": the event's version was no longer the source's current one, so the action
 *   resized nothing (`result` says when it found out, and the current version); not a failure;
 * - "retry": 5xx, a 202 (still running), 408, 429, timeouts and connection errors, and
 *   application errors the action marks retryable (the store was unreachable);
 * - "failed": no retry: an application error (a bad image) or another 4xx.
 *
 * @param status msg.statusCode (undefined when the request got no answer)
 * @param payload msg.payload (the activation record, or the request's error text)
 * @returns {outcome, activation, result} or {outcome, activation, failure: {code, message, retryable}};
 *          activation ({id, start, end, duration}) is undefined when there is no activation record
 */
function classifyInvoke(status, payload) {
    const body = payload && typeof payload === 'object' ? payload : null;
    const response = body && body.response;
    const activation = body
        ? { id: body.activationId, start: body.start, end: body.end, duration: body.duration } : undefined;
    if (status === 200 && response && response.success && response.result && !response.result.error) {
        const outcome = response.result.superseded === true ? 'superseded' : 'ok';
        return { outcome: outcome, activation: activation, result: response.result };
    }
    if (response && response.status === 'application error') {
        const error = (response.result && response.result.error) || {};
        const failure = { code: String(error.code || 'application_error'),
                          message: String(error.message || '').slice(0, 500), retryable: error.retryable === true };
        return { outcome: failure.retryable ? 'retry' : 'failed', activation: activation, failure: failure };
    }
    const failure = platformFailure(status, payload, body, response);
    failure.retryable = retryableStatus(status);
    return { outcome: failure.retryable ? 'retry' : 'failed', activation: activation, failure: failure };
}

/** The classify node's status for a verdict of classifyInvoke on the image `key`. */
function invokeStatus(verdict, key) {
    if (verdict.outcome === 'ok') {
        return { fill: 'green', shape: 'dot', text: 'ok ' + key };
    }
    if (verdict.outcome === 'superseded') {
        return { fill: 'grey', shape: 'ring', text: 'superseded ' + key };
    }
    const retry = verdict.outcome === 'retry';
    return { fill: retry ? 'yellow' : 'red', shape: retry ? 'ring' : 'dot', text: verdict.failure.code + ' ' + key };
}

module.exports = { invokeRequest, retryableStatus, classifyInvoke, invokeStatus };
