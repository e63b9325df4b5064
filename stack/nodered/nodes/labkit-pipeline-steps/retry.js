/**
 * The retry subflow's decision: run a failed operation again, and after how long, or give up.
 *
 * The state travels with the message: msg.retry = {attempt, first_ms, deadline_ms, permanent},
 * where attempt counts the attempts made so far, and the failed operation sets `permanent`
 * (an object with its `reason`) when no retry can succeed: then there is none, whatever the
 * policy. Policies: "none"; "fixed" (baseMs before each retry); "exponential" with full
 * jitter: sleep = random(0, min(capMs, baseMs * 2^attempt)).
 */
'use strict';

const { num } = require('./shared');

/** The policy from the subflow's settings (POLICY, MAX_ATTEMPTS, BASE_MS, CAP_MS, DEADLINE_MS). */
function retryPolicy(settings) {
    const s = settings || {};
    return {
        policy: String(s.policy || 'exponential').toLowerCase(),
        maxAttempts: num(s.maxAttempts, 10),
        baseMs: num(s.baseMs, 200),
        capMs: num(s.capMs, 5000),
        deadlineMs: num(s.deadlineMs, 30000)
    };
}

/** How long to sleep before the retry that follows `attempt` attempts (unrounded ms). */
function backoffMs(policy, attempt, random = Math.random) {
    if (policy.policy === 'fixed') {
        return policy.baseMs;
    }
    if (policy.policy === 'exponential') {
        return random() * Math.min(policy.capMs, policy.baseMs * Math.pow(2, attempt));
    }
    return 0;
}

/** Why there is no next attempt (a sentence), or null when there is one starting at `startsAt`. */
function giveUpReason(policy, retry, startsAt) {
    if (retry.permanent) {
        const status = retry.permanent.status ? ' (' + retry.permanent.status + ')' : '';
        return 'not retried after attempt ' + retry.attempt + ': a permanent error' + status;
    }
    if (policy.policy !== 'fixed' && policy.policy !== 'exponential') {
        return "retry policy '" + policy.policy + "': no retries";
    }
    if (retry.attempt >= policy.maxAttempts) {
        return 'gave up after ' + retry.attempt + ' attempts';
    }
    if (startsAt > retry.deadline_ms) {
        return 'gave up after ' + retry.attempt + ' attempts: the ' + policy.deadlineMs + ' ms deadline would pass';
    }
    return null;
}

/**
 * After a failed attempt: the next one, or giving up.
 *
 * @param state msg.retry (may be missing: then this was the first attempt, made now)
 * @returns {retry, delayMs} to try again after delayMs, or {retry, gaveUp} with the reason
 *          (also kept as retry.gave_up). `retry` is a new object: the state to carry on.
 */
function nextAttempt(state, policy, now, random = Math.random) {
    const retry = Object.assign({ attempt: 1, first_ms: now }, state);
    if (!retry.deadline_ms) {
        retry.deadline_ms = retry.first_ms + policy.deadlineMs;
    }
    const sleepMs = backoffMs(policy, retry.attempt, random);
    const reason = giveUpReason(policy, retry, now + sleepMs);
    if (reason) {
        retry.gave_up = reason;
        return { retry: retry, gaveUp: reason };
    }
    retry.attempt += 1;
    return { retry: retry, delayMs: Math.round(sleepMs) };
}

module.exports = { retryPolicy, backoffMs, giveUpReason, nextAttempt };
