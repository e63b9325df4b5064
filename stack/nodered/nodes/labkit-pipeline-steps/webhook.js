/**
 * Stage 4, webhook and join: the output bucket's webhook, and the join of each resize
 * result with the webhook for its output object.
 *
 * The two halves of an image come in either order (the webhook can beat the blocking
 * invoke's reply), so each waits for the other in `pending` (flow context): output key ->
 * list of halves, {side: "invoke" | "webhook", at, etag, ...}. ETags pair them when both are
 * known. The store's webhook is best-effort (a slow or busy receiver loses it), so an invoke
 * half still alone after a grace period is checked against the store ("output there?").
 */
'use strict';

const crypto = require('crypto');
const { unquote } = require('./shared');
const { eventName } = require('./events');

function digest(text) {
    return crypto.createHash('sha256').update(text, 'utf8').digest();
}

/** Is `given` the webhook token `expected`? Constant time; an empty expected token matches nothing. */
function tokenMatches(given, expected) {
    const want = String(expected || '');
    const same = crypto.timingSafeEqual(digest(String(given || '')), digest(want));
    return same && want.length > 0;
}

/** The webhook's body as an object: parsed when it came as text, null when it is not JSON. */
function webhookEvent(payload) {
    if (typeof payload !== 'string' && !Buffer.isBuffer(payload)) {
        return payload;
    }
    try {
        return JSON.parse(String(payload));
    } catch (err) {
        return null;
    }
}

/** The webhook halves of an event from the output bucket: {key_out, etag, t_webhook}, one per new object. */
function webhookHalves(event, outBucket, tWebhook) {
    const records = event && Array.isArray(event.Records) ? event.Records : [];
    const halves = [];
    for (const record of records) {
        const s3 = record && record.s3;
        const key = s3 && s3.object && s3.object.key;
        if (!eventName(record).startsWith('ObjectCreated:') || !s3 || !s3.bucket || s3.bucket.name !== outBucket
                || typeof key !== 'string') {
            continue; // the test event, other buckets, other event types
        }
        halves.push({ key_out: key, etag: unquote(s3.object.eTag) || null, t_webhook: tWebhook });
    }
    return halves;
}

/**
 * Put one half into `pending`, or complete the image with the other half waiting there.
 *
 * @returns {record} when the image is complete (the invoke half with the webhook's t_webhook and
 *          completed_by "webhook"), {check} when an invoke half now waits (a message for
 *          "output there?" after `graceMs`), else {}
 */
function pair(pending, keyOut, side, half, now, graceMs) {
    const list = pending[keyOut] || [];
    const other = side === 'invoke' ? 'webhook' : 'invoke';
    let i = list.findIndex(e => e.side === other && e.etag && half.etag && e.etag === half.etag);
    if (i < 0) {
        i = list.findIndex(e => e.side === other && !(e.etag && half.etag));
    }
    if (i < 0) {
        list.push(Object.assign({ side: side, at: now }, half));
        pending[keyOut] = list;
        return side === 'invoke'
            ? { check: { side: 'check', key_out: keyOut, etag: half.etag, at: now, delay: graceMs } } : {};
    }
    const match = list.splice(i, 1)[0];
    if (list.length === 0) {
        delete pending[keyOut];
    }
    const invoke = side === 'invoke' ? half : match;
    const hook = side === 'webhook' ? half : match;
    return { record: Object.assign({}, invoke, { t_webhook: hook.t_webhook, completed_by: 'webhook' }) };
}

/**
 * Join one message: an invoke result (msg.side "invoke") or a webhook (msg.side "webhook").
 *
 * @param pending flow context "pending", changed in place
 * @param msg the message; a sweep (msg.side "sweep") joins nothing
 * @param options {outBucket, graceMs}
 * @returns {done, check}: messages {record} of completed images, and messages for "output there?"
 */
function joinHalves(pending, msg, now, options) {
    const done = [];
    const check = [];
    const halves = [];
    if (msg.side === 'invoke') {
        const r = msg.result;
        halves.push(['invoke', r.key_out, { etag: r.etag_out || null, event: msg.event, result: r,
                                            invoke_attempts: msg.invoke_attempts, activation: msg.activation }]);
    } else if (msg.side === 'webhook') {
        for (const h of webhookHalves(msg.event, options.outBucket, msg.t_webhook)) {
            halves.push(['webhook', h.key_out, { etag: h.etag, t_webhook: h.t_webhook }]);
        }
    }
    for (const [side, keyOut, half] of halves) {
        const joined = pair(pending, keyOut, side, half, now, options.graceMs);
        if (joined.record) {
            done.push({ record: joined.record });
        }
        if (joined.check) {
            check.push(joined.check);
        }
    }
    return { done: done, check: check };
}

/**
 * Drop the halves older than `ttlMs` from `pending` (in place).
 *
 * @returns messages {record, expired: true} for the invoke halves dropped: images resized whose
 *          end nobody saw (outcome "no_webhook")
 */
function expireHalves(pending, now, ttlMs) {
    const expired = [];
    for (const keyOut of Object.keys(pending)) {
        const keep = pending[keyOut].filter(e => {
            if (now - e.at <= ttlMs) {
                return true;
            }
            if (e.side === 'invoke') {
                expired.push({ record: Object.assign({}, e, { t_webhook: null }), expired: true });
            }
            return false;
        });
        if (keep.length) {
            pending[keyOut] = keep;
        } else {
            delete pending[keyOut];
        }
    }
    return expired;
}

// Stale halves, upload stamps, trace claims and alert marks are dropped at most this often (and on every sweep).
const SWEEP_EVERY_MS = 5000;

/**
 * The join step: joinHalves, and now and then (a sweep message, or SWEEP_EVERY_MS since the last
 * time) expireHalves and dropStale, so the flow's memory stays bounded.
 *
 * @param state the flow's state, changed in place: {pending, uploads, traces, alerted, swept} (swept:
 *        the last sweep's time; traces may be missing)
 * @param settings {outBucket, graceMs, ttlMs}
 * @returns {done, expired, check}: messages for the join node's three outputs
 */
function join(state, msg, now, settings) {
    const joined = joinHalves(state.pending, msg, now, settings);
    let expired = [];
    if (msg.side === 'sweep' || now - (state.swept || 0) > SWEEP_EVERY_MS) {
        state.swept = now;
        expired = expireHalves(state.pending, now, settings.ttlMs);
        dropStale(state.uploads, now, settings.ttlMs);
        dropStale(state.traces || {}, now, settings.ttlMs);
        dropStale(state.alerted, now, settings.ttlMs);
    }
    return { done: joined.done, expired: expired, check: joined.check };
}

/**
 * Drop the entries of a map of {at, ...} (flow context "uploads", "traces", "alerted") older than
 * `ttlMs`; an entry that is a list of them keeps its young ones. Returns the map.
 */
function dropStale(map, now, ttlMs) {
    const young = entry => now - ((entry && entry.at) || 0) <= ttlMs;
    for (const k of Object.keys(map)) {
        const kept = Array.isArray(map[k]) ? map[k].filter(young) : young(map[k]) ? map[k] : [];
        if (Array.isArray(kept) && kept.length === 0) {
            delete map[k];
        } else {
            map[k] = kept;
        }
    }
    return map;
}

/** The invoke half a check message (from joinHalves) is about, while it still waits in `pending`. */
function waitingHalf(pending, check) {
    const list = pending[check.key_out] || [];
    return list.find(e => e.side === 'invoke' && e.at === check.at && e.etag === check.etag);
}

/**
 * The output object is in the store (`stat`, minio's statObject): complete the waiting half.
 *
 * The action answered only after its write was stored, so an object of another ETag there is
 * a later write that replaced this one (a newer version's output): the record completes all
 * the same. Waiting for a webhook that the store may have dropped would leave the version
 * without a line until the sweep (PENDING_TTL_MS), as if it had not been resized.
 *
 * @returns the record (t_webhook null, completed_by "check"; its end is the action's end, which
 *          wrote the object), taken out of `pending`; or null when the half was joined meanwhile
 */
function completeByCheck(pending, check, stat) {
    const list = pending[check.key_out] || [];
    const i = list.indexOf(waitingHalf(pending, check));
    if (i < 0) {
        return null;
    }
    const half = list.splice(i, 1)[0];
    if (list.length === 0) {
        delete pending[check.key_out];
    }
    return Object.assign({}, half, { t_webhook: null, completed_by: 'check' });
}

module.exports = {
    tokenMatches, webhookEvent, webhookHalves, joinHalves, expireHalves, dropStale, join, waitingHalf,
    completeByCheck
};
