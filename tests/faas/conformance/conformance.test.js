// The FaaS runner driven by the official `openwhisk` npm client (pinned in package.json):
// every API operation the lab uses, OpenWhisk's error statuses, and the semantics OpenWhisk's
// sources define (issue 14's table). tests/faas/test_conformance.py starts a runner and runs
// this file with `node --test`, passing OW_APIHOST, OW_AUTH and FIXTURES (a directory of zips).
'use strict'

const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { test } = require('node:test')
const openwhisk = require('openwhisk')

const APIHOST = process.env.OW_APIHOST
const AUTH = process.env.OW_AUTH
const FIXTURES = process.env.FIXTURES
const ow = openwhisk({ apihost: APIHOST, api_key: AUTH })
const KIND = 'python:3.11'
const POLL_MS = 50 // between looks for an activation record, so the poll does not hog the runner
const run = Math.random().toString(16).slice(2, 10)
const named = (prefix) => `${prefix}-${run}`

const ECHO = `
import os

def main(args):
    return {"args": args, "transaction": os.environ.get("__OW_TRANSACTION_ID"),
            "api_key": os.environ.get("__OW_API_KEY"), "action": os.environ["__OW_ACTION_NAME"]}
`
const MISBEHAVING = `
import threading

def main(args):
    mode = args.get("mode")
    if mode == "raise":
        raise ValueError("boom")
    if mode == "error":
        return {"error": "bad input"}
    if mode == "list":
        return [1, "two", {"three": 3}]
    if mode == "threads":
        stop = threading.Event()
        threads = [threading.Thread(target=stop.wait) for _ in range(40)]
        for t in threads:
            t.start()
        started = sum(t.is_alive() for t in threads)
        stop.set()
        return {"started": started}
    if mode == "hog":
        hoard = []
        while True:
            hoard.append(bytearray(8 * 1024 * 1024))
    return {"ok": True}
`

// An OpenWhiskError for a rejected promise, with its HTTP status.
async function rejection (promise) {
  try {
    await promise
  } catch (err) {
    return err
  }
  assert.fail('expected the call to be rejected')
}

// Poll for an activation record until it exists (a non-blocking invoke records it when done).
async function activationOf (id, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      return await ow.activations.get({ activationId: id })
    } catch (err) {
      if (err.statusCode !== 404 || Date.now() > deadline) throw err
      await new Promise((resolve) => setTimeout(resolve, POLL_MS))
    }
  }
}

const notes = (record) => Object.fromEntries(record.annotations.map((a) => [a.key, a.value]))

test('actions: create, get, list, update, delete with the lab\'s limits', async () => {
  const name = named('crud')
  const created = await ow.actions.create({ name, action: ECHO, kind: KIND, params: { a: 1 } })
  assert.equal(created.version, '0.0.1')
  assert.deepEqual(created.limits, { timeout: 60000, memory: 256, logs: 10, concurrency: 1 })
  assert.deepEqual(created.parameters, [{ key: 'a', value: 1 }])
  assert.equal(notes(created)['provide-api-key'], false)
  assert.equal(notes(created).exec, KIND)

  const fetched = await ow.actions.get({ name })
  assert.equal(fetched.exec.code, ECHO)
  assert.equal(fetched.exec.binary, false)
  const listed = await ow.actions.list({ limit: 200 })
  assert.ok(listed.some((a) => a.name === name))
  const counted = await ow.actions.list({ count: true })
  assert.deepEqual(counted, { actions: listed.length })

  const updated = await ow.actions.update({ name, action: ECHO, kind: KIND, limits: { memory: 512, concurrency: 4 } })
  assert.equal(updated.version, '0.0.2')
  assert.equal(updated.limits.memory, 512)
  assert.equal(notes(updated)['provide-api-key'], false)

  assert.equal((await ow.actions.delete({ name })).name, name)
  assert.equal((await rejection(ow.actions.get({ name }))).statusCode, 404)
})

test('limits: OpenWhisk\'s ranges (memory 128-512 MB, timeout 100 ms-5 min, logs 0-10 MB)', async () => {
  for (const limits of [{ memory: 64 }, { memory: 1024 }, { timeout: 50 }, { timeout: 300001 }, { logs: 11 }]) {
    const err = await rejection(ow.actions.create({ name: named('limits'), action: ECHO, kind: KIND, limits }))
    assert.equal(err.statusCode, 400, JSON.stringify(limits))
  }
  const edges = await ow.actions.create({
    name: named('edges'), action: ECHO, kind: KIND, limits: { memory: 128, timeout: 300000, logs: 0 }
  })
  assert.deepEqual(edges.limits, { memory: 128, timeout: 300000, logs: 0, concurrency: 1 })
})

test('invoke: blocking, result only, non-blocking; activations get, list, logs, result', async () => {
  const name = named('echo')
  await ow.actions.create({ name, action: ECHO, kind: KIND })
  const record = await ow.actions.invoke({ name, params: { x: 1 }, blocking: true })
  assert.equal(record.response.status, 'success')
  assert.equal(record.response.statusCode, 0)
  assert.equal(record.response.success, true)
  assert.deepEqual(record.response.result.args, { x: 1 })
  assert.ok(record.response.size >= Buffer.byteLength(JSON.stringify(record.response.result)), 'response.size')
  assert.ok(record.response.result.transaction, '__OW_TRANSACTION_ID is set')
  assert.equal(record.response.result.api_key, null, 'no API key without provide-api-key')
  assert.equal(record.response.result.action, `/guest/${name}`)

  assert.deepEqual((await ow.actions.invoke({ name, params: { y: 2 }, blocking: true, result: true })).args, { y: 2 })

  const accepted = await ow.actions.invoke({ name, params: { z: 3 } })
  assert.match(accepted.activationId, /^[0-9a-f]{32}$/)
  const done = await activationOf(accepted.activationId)
  assert.deepEqual(done.response.result.args, { z: 3 })
  const logs = await ow.activations.logs({ activationId: accepted.activationId })
  assert.ok(Array.isArray(logs.logs))
  const result = await ow.activations.result({ activationId: accepted.activationId })
  assert.equal(result.success, true)
  const listed = await ow.activations.list({ name, limit: 10 })
  assert.ok(listed.some((a) => a.activationId === accepted.activationId))
  assert.deepEqual(await ow.activations.list({ name, count: true }), { activations: listed.length })
})

test('non-blocking invoke: the 202 carries x-openwhisk-activation-id', async () => {
  const name = named('header')
  await ow.actions.create({ name, action: ECHO, kind: KIND })
  const response = await fetch(`${APIHOST}/api/v1/namespaces/_/actions/${name}`, {
    method: 'POST',
    headers: { Authorization: `Basic ${Buffer.from(AUTH).toString('base64')}`, 'Content-Type': 'application/json' },
    body: '{}'
  })
  assert.equal(response.status, 202)
  const body = await response.json()
  assert.equal(response.headers.get('x-openwhisk-activation-id'), body.activationId)
  await activationOf(body.activationId)
})

test('error statuses: 401, 403, 404, 409, 502', async () => {
  const [uuid] = AUTH.split(':')
  const stranger = openwhisk({ apihost: APIHOST, api_key: `${uuid}:${'x'.repeat(64)}` })
  assert.equal((await rejection(stranger.actions.list())).statusCode, 401)
  assert.equal((await rejection(ow.actions.list({ namespace: 'someone-else' }))).statusCode, 403)
  assert.equal((await rejection(ow.actions.get({ name: named('missing') }))).statusCode, 404)
  assert.equal((await rejection(ow.activations.get({ activationId: '0'.repeat(32) }))).statusCode, 404)

  const name = named('conflict')
  await ow.actions.create({ name, action: ECHO, kind: KIND })
  assert.equal((await rejection(ow.actions.create({ name, action: ECHO, kind: KIND }))).statusCode, 409)

  const failing = named('apperr')
  await ow.actions.create({ name: failing, action: MISBEHAVING, kind: KIND })
  const err = await rejection(ow.actions.invoke({ name: failing, params: { mode: 'error' }, blocking: true }))
  assert.equal(err.statusCode, 502)
  assert.equal(err.error.response.status, 'application error')
  assert.deepEqual(err.error.response.result, { error: 'bad input' })
})

test('an action that raises is an application error with the launcher\'s {"error"}', async () => {
  const name = named('raise')
  await ow.actions.create({ name, action: MISBEHAVING, kind: KIND })
  const err = await rejection(ow.actions.invoke({ name, params: { mode: 'raise' }, blocking: true }))
  assert.equal(err.statusCode, 502)
  const record = err.error
  assert.equal(record.response.statusCode, 1)
  assert.equal(record.response.status, 'application error')
  assert.deepEqual(record.response.result, { error: 'boom' })
  assert.ok(record.logs.some((line) => line.includes('ValueError: boom')))
})

test('an action returning a list succeeds with the list', async () => {
  const name = named('list')
  await ow.actions.create({ name, action: MISBEHAVING, kind: KIND })
  const record = await ow.actions.invoke({ name, params: { mode: 'list' }, blocking: true })
  assert.equal(record.response.status, 'success')
  assert.deepEqual(record.response.result, [1, 'two', { three: 3 }])
})

test('memory: 40 idle threads start at 128 MB; allocating past the limit is OpenWhisk\'s memory error', async () => {
  const name = named('memory')
  await ow.actions.create({ name, action: MISBEHAVING, kind: KIND, limits: { memory: 128 } })
  const threads = await ow.actions.invoke({ name, params: { mode: 'threads' }, blocking: true, result: true })
  assert.deepEqual(threads, { started: 40 })
  const err = await rejection(ow.actions.invoke({ name, params: { mode: 'hog' }, blocking: true }))
  assert.equal(err.statusCode, 502)
  assert.equal(err.error.response.status, 'action developer error')
  assert.deepEqual(err.error.response.result, { error: 'The action exhausted its memory and was aborted.' })
})

test('zip action: __main__.py with a virtualenv/ is detected as binary and runs', async () => {
  const name = named('zip')
  const zip = fs.readFileSync(path.join(FIXTURES, 'venv-action.zip'))
  const created = await ow.actions.create({ name, action: zip, kind: KIND })
  assert.equal(created.exec.binary, true)
  const listed = await ow.actions.list({ limit: 200 })
  assert.equal(listed.find((a) => a.name === name).exec.binary, true)
  const record = await ow.actions.invoke({ name, params: { who: 'npm' }, blocking: true })
  assert.deepEqual(record.response.result, { greeting: 'hello from the virtualenv', venv: 'virtualenv', args: { who: 'npm' } })
  assert.ok(!record.logs.some((line) => line.includes(zip.toString('base64').slice(0, 64))), 'no base64 in the logs')
})

test('the resize action deployed as a zip answers as its source does', async () => {
  const source = named('resize-src')
  const packed = named('resize-zip')
  await ow.actions.create({ name: source, action: fs.readFileSync(path.join(FIXTURES, 'resize.py'), 'utf8'), kind: KIND })
  await ow.actions.create({ name: packed, action: fs.readFileSync(path.join(FIXTURES, 'resize.zip')), kind: KIND })
  const bad = { bucket: 'dit247', key: 'cat.png', max_edge: 1 }
  const fromSource = await rejection(ow.actions.invoke({ name: source, params: bad, blocking: true }))
  const fromZip = await rejection(ow.actions.invoke({ name: packed, params: bad, blocking: true }))
  assert.equal(fromZip.statusCode, 502)
  assert.equal(fromZip.error.response.status, fromSource.error.response.status)
  assert.deepEqual(fromZip.error.response.result.error, fromSource.error.response.result.error)
})

test('packages: create, get, list, delete; actions inherit the package\'s parameters', async () => {
  const pkg = named('creds')
  const created = await ow.packages.create({
    name: pkg, package: { parameters: [{ key: 'user', value: 'lab' }, { key: 'region', value: 'eu' }] }
  })
  assert.equal(created.name, pkg)
  assert.equal((await rejection(ow.packages.create({ name: pkg }))).statusCode, 409)
  assert.ok((await ow.packages.list({ limit: 200 })).some((p) => p.name === pkg))

  await ow.actions.create({ name: `${pkg}/echo`, action: ECHO, kind: KIND, params: { region: 'us' } })
  const fetched = await ow.packages.get({ name: pkg })
  assert.deepEqual(fetched.actions.map((a) => a.name), ['echo'])
  const result = await ow.actions.invoke({ name: `${pkg}/echo`, params: { extra: 1 }, blocking: true, result: true })
  assert.deepEqual(result.args, { user: 'lab', region: 'us', extra: 1 })
  assert.equal(result.action, `/guest/${pkg}/echo`)

  const notEmpty = await rejection(ow.packages.delete({ name: pkg }))
  assert.equal(notEmpty.statusCode, 409)
  await ow.actions.delete({ name: `${pkg}/echo` })
  assert.equal((await ow.packages.delete({ name: pkg })).name, pkg)
  assert.equal((await rejection(ow.packages.get({ name: pkg }))).statusCode, 404)
})

test('namespaces: the caller\'s own', async () => {
  assert.deepEqual(await ow.namespaces.list(), ['guest'])
})
