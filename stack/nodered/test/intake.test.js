/**
 * The upload door (intake.js) on a bare http.Server: the cap on uploads in flight, the body
 * limits, and senders that stall.
 */
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const net = require('node:net');
const { once } = require('node:events');
const { steps } = require('./fixtures');

const LIMITS = { maxBodyBytes: 1000, maxInFlight: 2, retryAfterS: 1, stallMs: 150, bodyMs: 600 };

/**
 * A server with the door on /upload; each upload that gets through is answered when the test
 * calls release() (one at a time, in order), so uploads stay in flight as long as it wants.
 */
async function doorServer(limits = LIMITS) {
    const door = steps.uploadIntake(limits, ['/upload']);
    const limit = steps.bodyLimit(limits.maxBodyBytes);
    const waiting = [];
    const server = http.createServer((req, res) => limit(req, res, () => door(req, res, () => {
        waiting.push(() => {
            res.writeHead(200, { 'Content-Type': 'application/json' });
            res.end(JSON.stringify({ bytes: req.body ? req.body.length : null, raw: Buffer.isBuffer(req.body) }));
        });
    })));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const through = async count => {
        while (waiting.length < count) {
            await new Promise(resolve => setImmediate(resolve));
        }
    };
    return { door, server, port: server.address().port, through, release: () => waiting.shift()() };
}

/** POST `body` to `path`; resolves with {status, headers, json}. */
function post(port, body, path = '/upload', headers = {}) {
    return new Promise((resolve, reject) => {
        const all = Object.assign({ 'Content-Type': 'image/jpeg', 'Content-Length': body.length }, headers);
        Object.keys(all).filter(name => all[name] === undefined).forEach(name => delete all[name]);
        const req = http.request({ host: '127.0.0.1', port: port, path: path, method: 'POST', headers: all }, res => {
            const chunks = [];
            res.on('data', c => chunks.push(c));
            res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
                json: JSON.parse(Buffer.concat(chunks).toString() || 'null') }));
        });
        req.on('error', reject);
        req.end(body);
    });
}

/** A raw socket that sends the headers and `part` of a body of `declared` bytes, then nothing. */
async function stalledSender(port, declared, part) {
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    socket.write('POST /upload?key=s.jpg HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: ' +
        declared + '\r\n\r\n');
    socket.write(Buffer.alloc(part, 1));
    const received = [];
    socket.on('data', c => received.push(c));
    const closed = once(socket, 'close').then(() => Buffer.concat(received).toString());
    return { socket, closed, sentAt: Date.now() };
}

test('an upload gets through with its body as raw bytes, and leaves its place when answered', async () => {
    const { door, server, port, through, release } = await doorServer();
    try {
        const answer = post(port, Buffer.from('{"a":1}'), '/upload', { 'Content-Type': 'application/json' });
        await through(1);
        assert.equal(door.gate.count, 1);
        release();
        assert.deepEqual((await answer).json, { bytes: 7, raw: true });
        assert.equal(door.gate.count, 0);
    } finally {
        server.close();
    }
});

test('past the cap: 503 with Retry-After at once, before the body is read; room again once one is answered', async () => {
    const { door, server, port, through, release } = await doorServer();
    try {
        const first = [post(port, Buffer.alloc(10)), post(port, Buffer.alloc(10))];
        await through(2);
        const busy = await post(port, Buffer.alloc(500));
        assert.equal(busy.status, 503);
        assert.equal(busy.headers['retry-after'], '1');
        assert.equal(busy.json.max_in_flight, 2);
        assert.match(busy.json.error, /2 uploads are in flight.*retry after 1 s/);
        assert.equal(door.gate.count, 2);
        release();
        assert.equal((await first[0]).status, 200);
        const next = post(port, Buffer.alloc(10));
        await through(2);
        release();
        release();
        assert.deepEqual(await Promise.all([first[1], next]).then(r => r.map(a => a.status)), [200, 200]);
        assert.equal(door.gate.count, 0);
    } finally {
        server.close();
    }
});

test('other paths and methods pass the door untouched', async () => {
    const { door, server, port, through, release } = await doorServer();
    try {
        const other = post(port, Buffer.alloc(10), '/hooks/x');
        await through(1);
        assert.equal(door.gate.count, 0);
        release();
        assert.deepEqual((await other).json, { bytes: null, raw: false });
    } finally {
        server.close();
    }
});

test('a body over the limit gets 413, a body without Content-Length 411', async () => {
    const { door, server, port } = await doorServer();
    try {
        const big = await post(port, Buffer.alloc(1001));
        assert.equal(big.status, 413);
        assert.equal(big.json.max_body_bytes, 1000);
        const chunked = await post(port, Buffer.alloc(10), '/upload', { 'Content-Length': undefined,
            'Transfer-Encoding': 'chunked' });
        assert.equal(chunked.status, 411);
        assert.equal(door.gate.count, 0);
    } finally {
        server.close();
    }
});

test('a sender that stalls is cut off after stallMs with 408, and leaves its place', async () => {
    const { door, server, port } = await doorServer();
    try {
        const sender = await stalledSender(port, 500, 100);
        const answer = await sender.closed; // the event: the server closed the connection
        const waited = Date.now() - sender.sentAt;
        assert.match(answer, /^HTTP\/1.1 408/);
        assert.match(answer, /nothing came for 150 ms/);
        assert.ok(waited >= 140 && waited < 3000, waited);
        assert.equal(door.gate.count, 0);
    } finally {
        server.close();
    }
});

test('a sender that trickles is cut off once the body took longer than bodyMs', async () => {
    const { server, port } = await doorServer();
    try {
        const sender = await stalledSender(port, 500, 1);
        const trickle = setInterval(() => sender.socket.write(Buffer.alloc(1, 2)), 50);
        const answer = await sender.closed;
        clearInterval(trickle);
        assert.match(answer, /^HTTP\/1.1 408/);
        assert.match(answer, /the body took longer than 600 ms/);
        assert.ok(Date.now() - sender.sentAt < 4000);
    } finally {
        server.close();
    }
});

test('stalled senders past the cap get 503 at once and are cut off too', async () => {
    const { door, server, port } = await doorServer();
    try {
        const senders = [];
        for (let i = 0; i < 4; i++) {
            senders.push(await stalledSender(port, 900, 300));
        }
        const answers = await Promise.all(senders.map(s => s.closed));
        assert.deepEqual(answers.map(a => a.slice(0, 12)).sort(),
            ['HTTP/1.1 408', 'HTTP/1.1 408', 'HTTP/1.1 503', 'HTTP/1.1 503']);
        assert.equal(door.gate.count, 0);
    } finally {
        server.close();
    }
});

test('the gate counts places and frees each once', () => {
    const gate = steps.inFlightGate(1);
    const leave = gate.enter();
    assert.equal(gate.enter(), null);
    leave();
    leave();
    assert.equal(gate.count, 0);
    assert.ok(gate.enter());
});
