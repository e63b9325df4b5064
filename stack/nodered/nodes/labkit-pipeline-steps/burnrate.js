/**
 * The second alert policy: multiwindow, multi-burn-rate alerts on the error budget (the Google
 * SRE workbook, "Alerting on SLOs"), beside record.js's one e-mail per slow image.
 *
 * The SLO: SLO (0.99) of images done within the SLA threshold (10 s). An image is good when its
 * metrics line has outcome "ok" and duration_ms under the threshold; bad when it took the
 * threshold or longer, failed (outcome "error") or never finished (outcome "no_webhook");
 * superseded versions and malformed records are no images of the SLI and are not counted.
 *
 * burn rate = error rate / (1 - SLO) over a window: 1 spends exactly the whole budget over the
 * SLO window (30 days). A rule fires when the burn rate is over its threshold in both its long
 * and its short window (the short one lets the alert end soon after the problem does), and the
 * long window holds at least `minBad` bad images (so one slow image never pages, whatever the
 * traffic). The workbook's windows are scaled down by one factor, `scale`, so that a lab run of
 * minutes can fire: at the default 60, one workbook hour is one lab minute (1 h / 5 min is
 * 1 min / 5 s, the SLO window of 30 days is 12 h).
 *
 * One alert, one mail per episode: the first rule that fires opens the episode ("page" or
 * "ticket"), a page while a ticket is open escalates it (one more mail), and the episode ends,
 * with a "resolved" mail, when no rule fires any more. A page mails at once; a ticket only once
 * its rule has held for the first page rule's long window (1 h, scaled): in a fast burn the
 * ticket's low threshold is crossed a moment before a page's, and the page alone is the news.
 *
 * Times are epoch milliseconds; the state is a plain object the flow keeps in context.
 */
'use strict';

const { num } = require('./shared');

const POLICY = require('./burn-policies.json'); // shared with labkit/analysis/budget.py

/** The workbook's SLO window (30 days). */
const SLO_WINDOW_MS = POLICY.slo_window_s * 1000;
/**
 * The workbook's rules for a 30-day SLO: page at 14.4 over 1 h and 5 min, or 6 over 6 h and
 * 30 min; ticket at 1 over 3 days and 6 h (budget: the share of the budget a firing long window spent).
 */
const BURN_POLICIES = Object.freeze(POLICY.rules.map(r => Object.freeze({
    severity: r.severity, long_ms: r.long_s * 1000, short_ms: r.short_s * 1000, burn_rate: r.burn_rate, budget: r.budget
})));
const SEVERITY = { ticket: 1, page: 2 };
/** The defaults of the settings (the flow tab's env BURN_SLO, SLA_THRESHOLD_MS, BURN_WINDOW_SCALE, BURN_MIN_BAD). */
const BURN_DEFAULTS = Object.freeze({
    slo: POLICY.defaults.slo, slaMs: POLICY.defaults.sla_ms,
    scale: POLICY.defaults.scale, minBad: POLICY.defaults.min_bad
});
// Buckets per shortest window: counts are kept per bucket, so a window's edge is this fine.
const BUCKETS_PER_SHORT_WINDOW = 10;

/**
 * The settings, defaults filled in and the windows scaled: {slo, sla_ms, scale, min_bad,
 * slo_window_ms, ticket_wait_ms, bucket_ms, rules: [{severity, long_ms, short_ms, burn_rate, budget}]}.
 *
 * @param given {slo, slaMs, scale, minBad}: numbers or numeric strings (env values); others default
 * @throws when a value is out of range (slo in (0, 1), the rest > 0)
 */
function burnSettings(given = {}) {
    const slo = num(given.slo, BURN_DEFAULTS.slo);
    const slaMs = num(given.slaMs, BURN_DEFAULTS.slaMs);
    const scale = num(given.scale, BURN_DEFAULTS.scale);
    const minBad = num(given.minBad, BURN_DEFAULTS.minBad);
    if (!(slo > 0 && slo < 1) || !(slaMs > 0) || !(scale > 0) || !(minBad >= 1)) {
        throw new Error('burn-rate settings out of range: need 0 < BURN_SLO < 1, SLA_THRESHOLD_MS > 0, ' +
            'BURN_WINDOW_SCALE > 0 and BURN_MIN_BAD >= 1; got ' + [slo, slaMs, scale, minBad].join(', '));
    }
    const rules = BURN_POLICIES.map(p =>
        Object.assign({}, p, { long_ms: p.long_ms / scale, short_ms: p.short_ms / scale }));
    return {
        slo: slo, sla_ms: slaMs, scale: scale, min_bad: minBad, slo_window_ms: SLO_WINDOW_MS / scale,
        ticket_wait_ms: rules[0].long_ms,
        bucket_ms: Math.min(...rules.map(r => r.short_ms)) / BUCKETS_PER_SHORT_WINDOW, rules: rules
    };
}

/** "good" or "bad" for the SLI, or null when the metrics line is no image of it. */
function sliOutcome(line, slaMs) {
    if (!line || line.outcome === 'superseded' || line.outcome === 'malformed') {
        return null;
    }
    if (line.outcome === 'ok' && typeof line.duration_ms === 'number') {
        return line.duration_ms < slaMs ? 'good' : 'bad';
    }
    return 'bad'; // error, no_webhook, or an ok without a duration: not done within the threshold
}

function fingerprint(settings) {
    return [settings.slo, settings.sla_ms, settings.scale, settings.min_bad].join('/');
}

/**
 * The state to go on with: `previous` when it was kept under these settings, else a fresh one
 * (windows counted under another threshold or scale mean something else).
 */
function burnState(previous, settings) {
    if (previous && previous.settings === fingerprint(settings) && Array.isArray(previous.buckets)) {
        return previous;
    }
    return { settings: fingerprint(settings), buckets: [], episode: null, pending_since: null };
}

/** Count one metrics line in the windows at `now`; returns its SLI outcome ("good", "bad" or null). */
function countImage(state, settings, line, now) {
    const outcome = sliOutcome(line, settings.sla_ms);
    if (outcome === null) {
        return null;
    }
    const start = Math.floor(now / settings.bucket_ms) * settings.bucket_ms;
    let last = state.buckets[state.buckets.length - 1];
    if (!last || last[0] < start) {
        last = [start, 0, 0];
        state.buckets.push(last);
    }
    last[outcome === 'good' ? 1 : 2] += 1;
    return outcome;
}

/** Images, bad images, error rate and burn rate in the window of `windowMs` up to `now`. */
function windowCounts(state, windowMs, now, slo) {
    let images = 0;
    let bad = 0;
    for (const [start, good, worse] of state.buckets) {
        if (start > now - windowMs && start <= now) {
            images += good + worse;
            bad += worse;
        }
    }
    const errorRate = images ? bad / images : 0;
    return { images: images, bad: bad, error_rate: errorRate, burn_rate: errorRate / (1 - slo) };
}

/**
 * Each rule's two windows at `now`, whether it fires, and the severity of the worst that does
 * (null: none). Drops the buckets older than the longest window.
 */
function burnCheck(state, settings, now) {
    const longest = Math.max(...settings.rules.map(r => r.long_ms));
    state.buckets = state.buckets.filter(([start]) => start > now - longest);
    const rules = settings.rules.map(rule => {
        const long = windowCounts(state, rule.long_ms, now, settings.slo);
        const short = windowCounts(state, rule.short_ms, now, settings.slo);
        const firing = long.burn_rate > rule.burn_rate && short.burn_rate > rule.burn_rate &&
            long.bad >= settings.min_bad;
        return Object.assign({}, rule, { long: long, short: short, firing: firing });
    });
    const worst = rules.filter(r => r.firing).sort((a, b) => SEVERITY[b.severity] - SEVERITY[a.severity])[0];
    return { rules: rules, severity: worst ? worst.severity : null, rule: worst || null };
}

/** A duration for people: "5 s", "1 min", "1 h 12 min", "12 h". */
function span(ms) {
    const s = Math.round(ms / 100) / 10;
    if (s < 60) {
        return s + ' s';
    }
    const min = Math.round(s / 6) / 10;
    if (min < 60) {
        return min + ' min';
    }
    const h = Math.floor(min / 60);
    const rest = Math.round(min - h * 60);
    return h + ' h' + (rest ? ' ' + rest + ' min' : '');
}

function pct(x) {
    return (Math.round(x * 10000) / 100) + '%';
}

function fixed(x) {
    return x.toFixed(1);
}

/** The text every burn-rate mail shares: the SLO, the scale, and each rule's windows now. */
function windowsTable(check, settings) {
    const widths = [8, 22, 12, 13, 19, 11];
    const row = cells => cells.map((c, i) => i < widths.length ? String(c).padEnd(widths[i]) : c).join('');
    const rows = check.rules.map(r => row([
        r.severity, span(r.long_ms) + ' / ' + span(r.short_ms), r.long.bad + '/' + r.long.images,
        r.short.bad + '/' + r.short.images, fixed(r.long.burn_rate) + ' / ' + fixed(r.short.burn_rate), r.burn_rate,
        r.firing ? 'FIRING' : '-'
    ]));
    return [
        'SLO: ' + pct(settings.slo) + ' of images within ' + (settings.sla_ms / 1000) + ' s over ' +
            span(settings.slo_window_ms) + ':',
        'the workbook\'s 30 days, with every window scaled down by ' + settings.scale + ' (BURN_WINDOW_SCALE).',
        'A rule fires when its burn rate is over the threshold in both windows and its long window',
        'holds at least ' + settings.min_bad + ' bad images (BURN_MIN_BAD).',
        '',
        row(['alert', 'windows (long/short)', 'bad (long)', 'bad (short)', 'burn (long/short)', 'threshold', 'state']),
        ...rows
    ].join('\n');
}

/**
 * The e-mail (the e-mail node's input) of an episode that opens or escalates (kind "page" or
 * "ticket"), or ends ("resolved").
 */
function burnMail(kind, check, settings, episode, now) {
    const from = 'labkit-pipeline@lab.local';
    if (kind === 'resolved') {
        return {
            topic: '[burn-rate] resolved: ' + episode.severity + ' after ' + span(now - episode.since),
            from: from, payload: [
                'No burn-rate rule fires any more: the ' + episode.severity + ' alert opened at ' +
                    new Date(episode.since).toISOString() + ' ended at ' + new Date(now).toISOString() + '.',
                '', windowsTable(check, settings), '', '-- the labkit pipeline (Node-RED)'
            ].join('\n')
        };
    }
    const r = check.rule;
    const burn = Math.min(r.long.burn_rate, r.short.burn_rate);
    return {
        topic: '[burn-rate] ' + kind + ': error budget burning ' + fixed(burn) + 'x (over ' + r.burn_rate + 'x in ' +
            span(r.long_ms) + ' and ' + span(r.short_ms) + ')',
        from: from, payload: [
            'The pipeline spends its error budget ' + fixed(burn) + ' times as fast as the SLO allows: ' +
                r.long.bad + ' of the last ' + r.long.images + ' images',
            'were slow or failed in the last ' + span(r.long_ms) + ', ' + r.short.bad + ' of ' + r.short.images +
                ' in the last ' + span(r.short_ms) + '.',
            'The last ' + span(r.long_ms) + ' alone spent ' + pct(r.long.burn_rate * r.long_ms / settings.slo_window_ms) +
                ' of the budget of ' + span(settings.slo_window_ms) + ' (this rule fires from ' + pct(r.budget) + ').',
            '', windowsTable(check, settings), '', '-- the labkit pipeline (Node-RED)'
        ].join('\n')
    };
}

/**
 * Check the windows at `now` and move the alert's episode on: returns {mail, severity, rules,
 * episode}, where mail is the e-mail to send when an episode opened, escalated to a page or
 * ended, else null (once per episode: an open one sends nothing more).
 */
function burnAlert(state, settings, now) {
    const check = burnCheck(state, settings, now);
    const open = state.episode;
    state.pending_since = check.severity ? state.pending_since || now : null;
    const due = check.severity === 'page' || (check.severity && now - state.pending_since >= settings.ticket_wait_ms);
    let mail = null;
    if (due && !open) {
        state.episode = { severity: check.severity, since: now, mailed_at: now };
        mail = burnMail(check.severity, check, settings, state.episode, now);
    } else if (due && SEVERITY[check.severity] > SEVERITY[open.severity]) {
        Object.assign(open, { severity: check.severity, mailed_at: now });
        mail = burnMail(check.severity, check, settings, open, now);
    } else if (!check.severity && open) {
        mail = burnMail('resolved', check, settings, open, now);
        state.episode = null;
    }
    return { mail: mail, severity: check.severity, rules: check.rules, episode: state.episode };
}

/** The burn-rate node's status: the fastest burn over the first rule's windows, and the alert. */
function burnStatus(alert) {
    const r = alert.rules[0];
    const text = 'burn ' + fixed(r.long.burn_rate) + 'x/' + fixed(r.short.burn_rate) + 'x (' + span(r.long_ms) + '/' +
        span(r.short_ms) + ')' + (alert.episode ? ', ' + alert.episode.severity + ' open' : '');
    return { fill: alert.episode ? 'red' : 'green', shape: alert.episode ? 'dot' : 'ring', text: text };
}

module.exports = {
    BURN_POLICIES, BURN_DEFAULTS, burnSettings, sliOutcome, burnState, countImage, windowCounts, burnCheck, burnMail,
    burnAlert, burnStatus
};
