/**
 * The flow file itself: short function nodes that compile, and call only what the module has.
 */
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const { steps, FLOWS_FILE } = require('./fixtures');

const flows = JSON.parse(fs.readFileSync(FLOWS_FILE, 'utf8'));
const functions = flows.filter(n => n.type === 'function');
const MAX_LINES = 15;
const AsyncFunction = (async () => {}).constructor;

test('every function node is at most 15 lines', () => {
    const long = functions.map(n => [n.name, n.func.replace(/\n+$/, '').split('\n').length])
        .filter(([, lines]) => lines > MAX_LINES);
    assert.deepEqual(long, []);
});

test('every function node compiles, as Node-RED runs it', () => {
    for (const n of functions) {
        assert.doesNotThrow(() => new AsyncFunction('msg', 'node', 'context', 'flow', 'global', 'env', 'RED', n.func),
            n.name);
    }
});

test('the steps the function nodes call exist in the module', () => {
    const called = new Set();
    for (const n of functions) {
        for (const m of n.func.matchAll(/\bsteps\.(\w+)|global\.get\("steps"\)\.(\w+)/g)) {
            called.add(m[1] || m[2]);
        }
    }
    assert.ok(called.size > 20, [...called].join(' '));
    assert.deepEqual([...called].filter(name => typeof steps[name] !== 'function'), []);
});

test('every wire and link ends at a node of the flow', () => {
    const ids = new Set(flows.map(n => n.id));
    for (const n of flows) {
        for (const target of [...(n.wires || []).flat(), ...(n.links || [])]) {
            assert.ok(ids.has(target), n.id + ' -> ' + target);
        }
        if (n.g) {
            assert.ok(flows.find(g => g.id === n.g && g.nodes.includes(n.id)), n.id + ' in ' + n.g);
        }
    }
});
