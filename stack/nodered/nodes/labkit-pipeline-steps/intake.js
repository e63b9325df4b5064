/**
 * The upload endpoint's door: HTTP middleware that settings.js runs before Node-RED's http-in
 * nodes, so that Node-RED's memory stays bounded whatever the senders do.
 *
 * - bodyLimit: a declared body over the limit gets 413, a body without Content-Length 411
 *   (every http-in endpoint).
 * - uploadIntake (the upload paths only):
 *   - at most `maxInFlight` uploads at once, from the first byte of the body to the end of
 *     the answer (the flow's retries included); one more gets 503 with Retry-After, before its
 *     body is read;
 *   - the body is read as raw bytes (a Buffer, whatever its Content-Type), so Node-RED's
 *     parsers leave it alone;
 *   - a sender that sends nothing for `stallMs`, or has not sent the whole body after
 *     `bodyMs`, gets 408 and its connection is closed.
 *
 * So the bodies held at once are at most maxInFlight x maxBodyBytes. The limits are set in
 * one place, settings.js (UPLOAD_LIMITS).
 *
 * The middleware speaks plain Node http (writeHead, end), so node --test can run it on a
 * bare http.Server (stack/nodered/test/intake.test.js).
 */
'use strict';

// Past this declared size a refused body is not drained: the connection is closed instead.
const MAX_DRAIN_BYTES = 64 * 1024 * 1024;

/** Answer at once: status, headers, and a JSON body {error, ...extra}. */
function answer(res, status, headers, error, extra) {
    const body = JSON.stringify(Object.assign({ error: error }, extra));
    res.writeHead(status, Object.assign({ 'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body) }, headers));
    res.end(body);
}

/** Why the declared size is refused ({status, error, close}), or null. */
function sizeProblem(headers, maxBodyBytes) {
    const declared = headers['content-length'];
    if (declared === undefined) {
        return headers['transfer-encoding'] === undefined ? null
            : { status: 411, error: 'Length Required: send a Content-Length header', close: true };
    }
    const length = Number(declared);
    if (!/^\d+$/.test(String(declared)) || !Number.isFinite(length)) {
        return { status: 400, error: 'Bad Request: invalid Content-Length', close: true };
    }
    if (length > maxBodyBytes) {
        return { status: 413, error: 'Payload Too Large: the limit is ' + maxBodyBytes + ' bytes',
            close: length > MAX_DRAIN_BYTES, max_body_bytes: maxBodyBytes };
    }
    return null;
}

/**
 * Refuse a request at once. Its body is drained (read and dropped) so that the client reads
 * the answer, unless `close`: then the connection is closed once the answer is out.
 */
function refuse(req, res, problem, headers) {
    const extra = Object.assign({}, problem);
    delete extra.status;
    delete extra.error;
    delete extra.close;
    if (problem.close) {
        answer(res, problem.status, Object.assign({ Connection: 'close' }, headers), problem.error, extra);
        return;
    }
    req.resume(); // before the answer, so Node does not drop our 'data' listeners
    answer(res, problem.status, headers, problem.error, extra);
}

/**
 * Middleware for every http-in endpoint: 413 for a declared body over `maxBodyBytes`, 411
 * for a body without Content-Length (its size cannot be checked before the parsers read it).
 * Node-RED's own parsers answer 500 at their limit, and do not bound other content types.
 */
function bodyLimit(maxBodyBytes) {
    return function bodyLimitMiddleware(req, res, next) {
        const problem = sizeProblem(req.headers, maxBodyBytes);
        if (problem) {
            refuse(req, res, problem, {});
            return;
        }
        next();
    };
}

/**
 * Cut a sender off when it stalls: `onStall(why)` once nothing came for `stallMs`, or the
 * body is not complete after `bodyMs`. Returns a function that stops watching.
 */
function watchSender(req, limits, onStall) {
    const quiet = setTimeout(() => onStall('nothing came for ' + limits.stallMs + ' ms'), limits.stallMs);
    const whole = setTimeout(() => onStall('the body took longer than ' + limits.bodyMs + ' ms'), limits.bodyMs);
    const heard = () => quiet.refresh();
    req.on('data', heard);
    const stop = () => {
        clearTimeout(quiet);
        clearTimeout(whole);
        req.removeListener('data', heard);
    };
    req.once('end', stop);
    req.once('close', stop);
    return stop;
}

/** Answer 408 and close the connection: the sender stalled. */
function cutOff(req, res, why, limits) {
    const body = JSON.stringify({ error: 'Request Timeout: ' + why + '; send the whole body without pausing',
        stall_ms: limits.stallMs, body_ms: limits.bodyMs });
    if (res.headersSent || res.writableEnded) {
        req.destroy();
        return;
    }
    res.writeHead(408, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body),
        Connection: 'close' });
    res.end(body, () => req.destroy());
}

/** Read the whole body into req.body (a Buffer), then call next(); or cut the sender off. */
function readBody(req, res, limits, next) {
    const chunks = [];
    let size = 0;
    let settled = false; // answered, cut off, or handed on: later events change nothing
    const settle = then => (...args) => {
        if (!settled) {
            settled = true;
            stop();
            then(...args);
        }
    };
    const stop = watchSender(req, limits, settle(why => cutOff(req, res, why, limits)));
    req.on('data', chunk => {
        size += chunk.length;
        if (size <= limits.maxBodyBytes) {
            chunks.push(chunk);
        }
    });
    req.on('error', settle(err => next(err)));
    req.on('end', settle(() => {
        if (size > limits.maxBodyBytes) { // more than it declared
            answer(res, 413, {}, 'Payload Too Large: the limit is ' + limits.maxBodyBytes + ' bytes');
            return;
        }
        req.body = Buffer.concat(chunks, size);
        req._body = true; // Node-RED's body parsers leave a read body alone
        next();
    }));
}

/**
 * A count of uploads in flight with a cap: enter() says whether there was room, and the
 * function it returns (once room was granted) frees the place; calling it twice frees one.
 */
function inFlightGate(maxInFlight) {
    let count = 0;
    return {
        get count() {
            return count;
        },
        enter() {
            if (count >= maxInFlight) {
                return null;
            }
            count += 1;
            let left = false;
            return () => {
                if (!left) {
                    left = true;
                    count -= 1;
                }
            };
        }
    };
}

/**
 * The upload door (see the module's comment).
 *
 * @param limits {maxBodyBytes, maxInFlight, stallMs, bodyMs, retryAfterS}
 * @param paths the request paths it guards (POST only), e.g. ['/upload']
 * @returns middleware, with `.gate.count` (uploads in flight now) for tests and status
 */
function uploadIntake(limits, paths) {
    const guarded = new Set(paths);
    const gate = inFlightGate(limits.maxInFlight);
    const busy = { status: 503, error: 'Service Unavailable: ' + limits.maxInFlight + ' uploads are in flight, ' +
        'the most Node-RED takes at once; retry after ' + limits.retryAfterS + ' s', max_in_flight: limits.maxInFlight };
    function intake(req, res, next) {
        const path = String(req.url || '').split('?')[0];
        if (req.method !== 'POST' || !guarded.has(path) || req._body || req.readableEnded || req.labkitIntake) {
            next(); // not an upload, or already through the door (settings.js runs it twice)
            return;
        }
        req.labkitIntake = true;
        const problem = sizeProblem(req.headers, limits.maxBodyBytes);
        const leave = problem ? null : gate.enter();
        if (!leave) {
            refuse(req, res, problem || busy, problem ? {} : { 'Retry-After': String(limits.retryAfterS) });
            if (!problem) {
                watchSender(req, limits, () => req.destroy()); // a stalled body is not drained for ever
            }
            return;
        }
        res.once('finish', leave);
        res.once('close', leave);
        readBody(req, res, limits, next);
    }
    intake.gate = gate;
    return intake;
}

module.exports = { bodyLimit, uploadIntake, inFlightGate };
