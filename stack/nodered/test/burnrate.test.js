'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { steps, T0 } = require('./fixtures');

const ok = ms => ({ outcome: 'ok', duration_ms: ms });
const GOOD = ok(800);
const SLOW = ok(12000);
const FAILED = { outcome: 'error', code: 'invoke_timeout', duration_ms: null };

/** A fresh state and the default settings (or `given`), with `lines` counted at the given times. */
function fed(events, given) {
    const settings = steps.burnSettings(given);
    const state = steps.burnState(undefined, settings);
    for (const [t, line] of events) {
        steps.countImage(state, settings, line, t);
    }
    return { settings, state };
}

/** `n` lines, one every `everyMs` from `t0`. */
function series(n, line, t0, everyMs) {
    return Array.from({ length: n }, (_, i) => [t0 + i * everyMs, line]);
}

test('the default settings: the workbook thresholds, every window scaled down by 60', () => {
    const s = steps.burnSettings();
    assert.equal(s.slo, 0.99);
    assert.equal(s.sla_ms, 10000);
    assert.equal(s.scale, 60);
    assert.equal(s.min_bad, 3);
    assert.equal(s.slo_window_ms, 12 * 3600 * 1000); // 30 days / 60
    assert.deepEqual(s.rules.map(r => [r.severity, r.long_ms, r.short_ms, r.burn_rate]), [
        ['page', 60000, 5000, 14.4], ['page', 360000, 30000, 6], ['ticket', 72 * 60000, 6 * 60000, 1]]);
    assert.equal(s.bucket_ms, 500);
    assert.equal(s.ticket_wait_ms, 60000);
});

test('each rule\'s budget share is its burn rate times its long window over the 30-day SLO window', () => {
    for (const r of steps.BURN_POLICIES) {
        assert.ok(Math.abs(r.burn_rate * r.long_ms / (30 * 24 * 3600 * 1000) - r.budget) < 1e-12, r);
    }
});

test('the settings come from env strings, and a bad one is refused with its name', () => {
    const s = steps.burnSettings({ slo: '0.999', slaMs: '5000', scale: '1440', minBad: '' });
    assert.deepEqual([s.slo, s.sla_ms, s.scale, s.min_bad], [0.999, 5000, 1440, 3]);
    assert.equal(s.rules[0].long_ms, 2500);
    assert.throws(() => steps.burnSettings({ slo: 1 }), /BURN_SLO/);
    assert.throws(() => steps.burnSettings({ scale: 0 }), /BURN_WINDOW_SCALE/);
});

test('the SLI: ok under the threshold is good; slow, failed and unfinished are bad; the rest is not counted', () => {
    assert.equal(steps.sliOutcome(ok(9999), 10000), 'good');
    assert.equal(steps.sliOutcome(ok(10000), 10000), 'bad'); // the per-image alert's rule: the threshold or longer
    assert.equal(steps.sliOutcome(FAILED, 10000), 'bad');
    assert.equal(steps.sliOutcome({ outcome: 'no_webhook', duration_ms: null }, 10000), 'bad');
    assert.equal(steps.sliOutcome({ outcome: 'superseded' }, 10000), null);
    assert.equal(steps.sliOutcome({ outcome: 'malformed' }, 10000), null);
});

test('burn rate = error rate / (1 - SLO) in each window', () => {
    // 2 bad of 20 in the last minute: error rate 10%, burn rate 10 (at SLO 99%)
    const { settings, state } = fed([...series(18, GOOD, T0, 1000), ...series(2, SLOW, T0 + 18000, 1000)]);
    const counts = steps.windowCounts(state, 60000, T0 + 20000, settings.slo);
    assert.equal(counts.images, 20);
    assert.equal(counts.bad, 2);
    assert.ok(Math.abs(counts.burn_rate - 10) < 1e-9, counts.burn_rate);
    assert.deepEqual(steps.windowCounts(state, 60000, T0 + 200000, settings.slo),
        { images: 0, bad: 0, error_rate: 0, burn_rate: 0 });
});

test('a fast burn pages once per episode, then resolves when the short windows are clean', () => {
    const { settings, state } = fed(series(60, GOOD, T0, 1000));
    const mails = [];
    let t = T0 + 60000;
    for (let i = 0; i < 20; i += 1, t += 500) { // every image slow or failed for 10 s
        steps.countImage(state, settings, i % 2 ? SLOW : FAILED, t);
        const alert = steps.burnAlert(state, settings, t);
        if (alert.mail) { mails.push([t, alert.mail]); }
    }
    assert.equal(mails.length, 1);
    const [firedAt, page] = mails[0];
    // 4 bad among 60 good in the last 6 min: burn 6.25 > 6 in both of the second page rule's windows
    assert.equal(firedAt, T0 + 61500);
    assert.match(page.topic, /^\[burn-rate\] page: error budget burning 6\.\dx \(over 6x in 6 min and 30 s\)$/);
    assert.match(page.payload, /99% of images within 10 s over 12 h/);
    assert.match(page.payload, /scaled down by 60/);
    assert.match(page.payload, /The last 6 min alone spent 5\.\d+% of the budget of 12 h \(this rule fires from 5%\)/);
    assert.equal(state.episode.severity, 'page');
    // Good images again: the page's windows clear, but the ticket's short window (6 min) still burns
    // over 1: the episode stays open (and mails nothing) until it clears.
    for (t = T0 + 71000; t < T0 + 71000 + 7 * 60000; t += 1000) {
        steps.countImage(state, settings, GOOD, t);
        const alert = steps.burnAlert(state, settings, t);
        if (alert.mail) { mails.push([t, alert.mail]); }
    }
    assert.equal(mails.length, 2);
    const [resolvedAt, resolved] = mails[1];
    assert.match(resolved.topic, /^\[burn-rate\] resolved: page after \d+(\.\d)? min$/);
    assert.ok(resolvedAt > T0 + 71000 + 5 * 60000 && resolvedAt <= T0 + 71000 + 6 * 60000 + 1000, resolvedAt - T0);
    assert.equal(state.episode, null);
});

test('one slow image does not fire, with traffic around it or without', () => {
    const alone = [[T0, SLOW]];
    const amongGood = [...series(30, GOOD, T0, 200), [T0 + 6000, SLOW], ...series(30, GOOD, T0 + 6100, 200)];
    for (const events of [alone, amongGood]) {
        const { settings, state } = fed([]);
        for (const [t, line] of events) {
            steps.countImage(state, settings, line, t);
            assert.equal(steps.burnAlert(state, settings, t).mail, null);
        }
    }
});

test('two slow images among few fire nothing either: a rule needs BURN_MIN_BAD bad images', () => {
    const { settings, state } = fed([[T0, SLOW], [T0 + 100, SLOW]]);
    const check = steps.burnCheck(state, settings, T0 + 200);
    assert.ok(check.rules[0].long.burn_rate > 14.4 && check.rules[0].short.burn_rate > 14.4);
    assert.equal(check.severity, null);
    steps.countImage(state, settings, SLOW, T0 + 300);
    assert.equal(steps.burnCheck(state, settings, T0 + 300).severity, 'page');
});

test('a rule needs both windows: a burn that stopped a short window ago does not fire', () => {
    // 10 bad of 40 in the last minute (burn 25 > 14.4), but the last 5 s are clean
    const { settings, state } = fed([...series(10, SLOW, T0, 1000), ...series(30, GOOD, T0 + 10000, 1000)]);
    const check = steps.burnCheck(state, settings, T0 + 40000);
    assert.ok(check.rules[0].long.burn_rate > 14.4);
    assert.equal(check.rules[0].short.burn_rate, 0);
    assert.equal(check.rules[0].firing, false);
});

test('a slow burn opens a ticket, and a page later escalates it with one more mail', () => {
    // 2% bad for 7 minutes: burn 2 over both ticket windows, under both page thresholds
    const { settings, state } = fed([]);
    const mails = [];
    let t = T0;
    for (let i = 0; i < 7 * 60 * 5; i += 1, t += 200) {
        steps.countImage(state, settings, i % 50 === 0 ? FAILED : GOOD, t);
        const alert = steps.burnAlert(state, settings, t);
        if (alert.mail) { mails.push(alert.mail.topic); }
    }
    assert.equal(mails.length, 1);
    assert.match(mails[0], /^\[burn-rate\] ticket: .* \(over 1x in 1 h 12 min and 6 min\)$/);
    for (let i = 0; i < 60; i += 1, t += 200) {
        steps.countImage(state, settings, FAILED, t);
        const alert = steps.burnAlert(state, settings, t);
        if (alert.mail) { mails.push(alert.mail.topic); }
    }
    assert.equal(mails.length, 2);
    assert.match(mails[1], /^\[burn-rate\] page: /);
    assert.equal(state.episode.severity, 'page');
});

test('the windows start afresh when the settings change, and old buckets are dropped', () => {
    const { settings, state } = fed(series(5, SLOW, T0, 100));
    assert.equal(steps.burnState(state, steps.burnSettings()), state);
    const other = steps.burnSettings({ slaMs: 5000 });
    assert.deepEqual(steps.burnState(state, other).buckets, []);
    steps.burnCheck(state, settings, T0 + 73 * 60000);
    assert.deepEqual(state.buckets, []);
});

test('counts are kept per bucket: memory stays bounded however many images come', () => {
    const { state } = fed(series(10000, GOOD, T0, 10));
    assert.equal(state.buckets.length, 200); // 100 s in buckets of 500 ms
});

test('the node status names the burn over the first page windows and an open episode', () => {
    const { settings, state } = fed(series(5, FAILED, T0, 100));
    const alert = steps.burnAlert(state, settings, T0 + 500);
    assert.deepEqual(steps.burnStatus(alert),
        { fill: 'red', shape: 'dot', text: 'burn 100.0x/100.0x (1 min/5 s), page open' });
});
