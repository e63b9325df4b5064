'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { steps } = require('./fixtures');

test('the metrics file from an offset: the new bytes and the whole size; none yet is empty', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'metrics-'));
    const file = path.join(dir, 'metrics.jsonl');
    try {
        assert.deepEqual(await steps.metricsFrom(file, 0), { size: 0, bytes: Buffer.alloc(0) });
        fs.writeFileSync(file, '{"key":"a"}\n{"key":"b"}\n');
        const whole = await steps.metricsFrom(file, 0);
        assert.equal(whole.size, 24);
        assert.equal(whole.bytes.toString(), '{"key":"a"}\n{"key":"b"}\n');
        assert.equal((await steps.metricsFrom(file, 12)).bytes.toString(), '{"key":"b"}\n');
        assert.deepEqual(await steps.metricsFrom(file, 99), { size: 24, bytes: Buffer.alloc(0) });
        for (const bad of [-5, 1.5, NaN, undefined]) {
            assert.equal((await steps.metricsFrom(file, bad)).bytes.length, 24, String(bad));
        }
        const capped = await steps.metricsFrom(file, 0, 10);
        assert.equal(capped.size, 24);
        assert.equal(capped.bytes.toString(), '{"key":"a"');
    } finally {
        fs.rmSync(dir, { recursive: true, force: true });
    }
});
