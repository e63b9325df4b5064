'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { steps } = require('./fixtures');

test('num: numbers and numeric strings, else the fallback', () => {
    assert.deepEqual([5, '5', '2.5', 0, '0', -1].map(v => steps.num(v, 9)), [5, 5, 2.5, 0, 0, -1]);
    assert.deepEqual([undefined, null, '', 'x', NaN, Infinity, '1e400'].map(v => steps.num(v, 9)),
        [9, 9, 9, 9, 9, 9, 9]);
    assert.deepEqual([1, 1.5, '1', null, NaN].map(steps.numOrNull), [1, 1.5, null, null, null]);
});

test('error text: code and message on one line, at most 500 characters', () => {
    const err = Object.assign(new Error('connect refused'), { code: 'ECONNREFUSED' });
    assert.equal(steps.errText(err), 'ECONNREFUSED: connect refused');
    assert.equal(steps.errText(new Error('plain')), 'plain');
    assert.equal(steps.errText('a string'), 'a string');
    assert.equal(steps.errText(null), 'unknown error');
    assert.equal(steps.errText(new Error('x'.repeat(600))).length, 500);
});

test('ETags lose their quotes', () => {
    assert.equal(steps.unquote('"abc"'), 'abc');
    assert.equal(steps.unquote(undefined), '');
});

test('the S3 client options from an endpoint URL', () => {
    assert.deepEqual(steps.s3Options('http://127.0.0.1:7070', 'ak', 'sk'), {
        endPoint: '127.0.0.1', port: 7070, useSSL: false, accessKey: 'ak', secretKey: 'sk',
        region: 'us-east-1', pathStyle: true });
    assert.equal(steps.s3Options('https://s3.example.org', 'ak', 'sk').port, 443);
    assert.equal(steps.s3Options('https://s3.example.org', 'ak', 'sk').useSSL, true);
    assert.equal(steps.s3Options('http://store', 'ak', 'sk').port, 80);
    assert.throws(() => steps.s3Options('', 'ak', 'sk'), TypeError);
});

test('one S3 client per endpoint and account; a clear error without the library', () => {
    class Client {
        constructor(options) {
            this.options = options;
        }
    }
    const lib = { Client: Client };
    const a = steps.s3client(lib, 'http://127.0.0.1:7070', 'ak', 'sk');
    assert.equal(steps.s3client(lib, 'http://127.0.0.1:7070', 'ak', 'sk'), a);
    assert.notEqual(steps.s3client(lib, 'http://127.0.0.1:7071', 'ak', 'sk'), a);
    assert.equal(a.options.port, 7070);
    assert.throws(() => steps.s3client(undefined, 'http://x', 'ak', 'sk'), /minio library is missing/);
});
