/**
 * Object keys: the output key rule (pinned to the resize action's by key-corpus.json, which
 * tests/test_upload_keys.py checks from Python) and the keys /upload refuses.
 */
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const { steps } = require('./fixtures');

const corpus = require(path.join(__dirname, 'key-corpus.json'));

/** A corpus key: a string, or a list of pieces (a string, or [character, times]). */
function expand(key) {
    if (key === null || typeof key === 'string') {
        return key;
    }
    return key.map(piece => typeof piece === 'string' ? piece : piece[0].repeat(piece[1])).join('');
}

test('the output key is the action\'s (the shared corpus)', () => {
    for (const [raw, format, expected] of corpus.output_keys.cases) {
        const key = expand(raw);
        const label = key.slice(0, 40) + ' ' + format;
        if (expected === null) {
            assert.throws(() => steps.outputKey(key, format), /output key longer than 1024 bytes/, label);
        } else {
            assert.equal(steps.outputKey(key, format), expand(expected), label);
        }
    }
});

test('the keys /upload takes and refuses, and why (the shared corpus)', () => {
    for (const [raw, why] of corpus.upload_keys.cases) {
        const key = expand(raw);
        const problem = steps.keyProblem(key);
        if (why === null) {
            assert.equal(problem, null, JSON.stringify(key.slice(0, 60)));
        } else {
            assert.ok(problem && problem.includes(why), JSON.stringify(key.slice(0, 60)) + ': ' + problem);
            assert.match(problem, /: [a-z].*$/, 'names the fix: ' + problem); // "...: remove it"
        }
    }
});

test('a key must be one string', () => {
    for (const key of [null, ['a', 'b'], { a: 1 }, 5]) {
        assert.equal(steps.keyProblem(key), 'must be given once, as text');
    }
});

test('a segment may take 255 bytes and no more; so may the output key\'s last segment', () => {
    assert.equal(steps.keyProblem('d/' + 'x'.repeat(251) + '.jpg'), null);
    assert.match(steps.keyProblem('d/' + 'x'.repeat(252) + '.jpg'), /segment of 256 bytes/);
    assert.equal(steps.keyProblem('d/' + 'x'.repeat(251)), null); // + '.jpg' makes 255
    assert.match(steps.keyProblem('d/' + 'x'.repeat(252)), /last segment is 256 bytes/);
    assert.equal(steps.keyProblem('d/' + 'x'.repeat(251) + '.png/a.jpg'), null);
    assert.equal(steps.MAX_SEGMENT_BYTES, 255);
    assert.equal(steps.MAX_KEY_BYTES, 1024);
});

test('a raw query value must decode to UTF-8, or the parser keeps it as sent', () => {
    assert.equal(steps.decodesStrictly('caf%C3%A9.jpg'), true);
    assert.equal(steps.decodesStrictly('a+b%2Bc'), true);
    assert.equal(steps.decodesStrictly('%FF.jpg'), false);
    assert.equal(steps.decodesStrictly('%ED%A0%80.jpg'), false); // an encoded surrogate
    assert.equal(steps.decodesStrictly('100%.jpg'), false);
    assert.deepEqual(steps.rawQueryValues('/upload?key=%FF.jpg&trace_id=t&key=b#frag', 'key'), ['%FF.jpg', 'b']);
    assert.deepEqual(steps.rawQueryValues('/upload?k%65y=x=y', 'key'), ['x=y']);
    assert.deepEqual(steps.rawQueryValues('/upload', 'key'), []);
});
