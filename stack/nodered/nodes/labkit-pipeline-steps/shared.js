/**
 * Helpers every stage uses: reading numeric settings, error text, ETags, the S3 client.
 */
'use strict';

const { AsyncLocalStorage } = require('node:async_hooks');
const http = require('node:http');
const https = require('node:https');

/** `value` as a finite number (numbers and numeric strings), else `fallback` (also for "" and null). */
function num(value, fallback) {
    const n = Number(value);
    return value !== undefined && value !== null && value !== '' && Number.isFinite(n) ? n : fallback;
}

/** `value` when it is a finite number, else null. */
function numOrNull(value) {
    return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/** An error as one line of at most 500 characters: "CODE: message". */
function errText(err) {
    return String((err && (err.code ? err.code + ': ' : '') + (err.message || err)) || 'unknown error').slice(0, 500);
}

/** An ETag without its quotes ("" when there is none). */
function unquote(etag) {
    return String(etag || '').replace(/"/g, '');
}

/** The minio-js client options for an S3 endpoint URL (path-style, region us-east-1). */
function s3Options(url, accessKey, secretKey) {
    const u = new URL(url || '');
    const secure = u.protocol === 'https:';
    return {
        endPoint: u.hostname, port: Number(u.port) || (secure ? 443 : 80), useSSL: secure,
        accessKey: accessKey, secretKey: secretKey, region: 'us-east-1', pathStyle: true
    };
}

// The store's answers within one withStoreStatus call. minio-js builds its S3Error from the
// answer's XML without the HTTP status, and reports 5xx, 408 and 429 as plain Errors.
const answers = new AsyncLocalStorage();

/**
 * An http(s) module for minio-js (its `transport` option) that notes the status of each answer
 * for the withStoreStatus call that sent the request.
 */
function statusNotingTransport(base) {
    return {
        request(options, callback) {
            const seen = answers.getStore(); // the call this request belongs to, if any
            return base.request(options, response => {
                if (seen) {
                    seen.status = response.statusCode;
                }
                callback(response);
            });
        }
    };
}

/**
 * Run `call` (a store request through s3client's client); a failure comes back with
 * `err.storeStatus`, the HTTP status of the store's last answer (undefined when none came).
 */
async function withStoreStatus(call) {
    const seen = {};
    try {
        return await answers.run(seen, call);
    } catch (err) {
        if (err && typeof err === 'object' && seen.status !== undefined) {
            err.storeStatus = seen.status;
        }
        throw err;
    }
}

const clients = new WeakMap(); // Minio library -> Map(endpoint and account -> client)

/**
 * One minio-js client per endpoint and account, built on first use. Its requests note the
 * store's status for withStoreStatus.
 *
 * @param Minio the minio library (function nodes get it as global.get("minio"))
 * @throws when the library is missing or the URL is not one
 */
function s3client(Minio, url, accessKey, secretKey) {
    if (!Minio) {
        throw new Error("the minio library is missing from Node-RED's functionGlobalContext (see settings.js)");
    }
    if (!clients.has(Minio)) {
        clients.set(Minio, new Map());
    }
    const built = clients.get(Minio);
    const id = [url, accessKey, secretKey].join('\u0000');
    if (!built.has(id)) {
        const options = s3Options(url, accessKey, secretKey);
        options.transport = statusNotingTransport(options.useSSL ? https : http);
        built.set(id, new Minio.Client(options));
    }
    return built.get(id);
}

module.exports = { num, numOrNull, errText, unquote, s3Options, s3client, statusNotingTransport, withStoreStatus };
