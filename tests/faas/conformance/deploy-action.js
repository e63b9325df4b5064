// Deploy (create or update) an action from a zip with the official `openwhisk` npm client, as a
// user of a real OpenWhisk does: ow.actions.update({name, action: <the zip's bytes>, kind, params,
// annotations, limits}). tests/test_action_zip.py deploys the pipeline's resize action with it.
//
//   OW_APIHOST=https://host:port OW_AUTH=uuid:key node deploy-action.js < deployment.json
//
// The API key comes from OW_AUTH in the environment only (never argv, which other local users can
// read) and is never printed. The deployment is one JSON document on stdin, since its parameters
// hold credentials too:
//   {"name": "resize", "zip": "/path/to/resize.zip", "kind": "python:3.11", "main": "main",
//    "params": {...}, "annotations": {...}, "limits": {...}}
// On success one JSON line goes to stdout: the stored action's name, version, kind, binary, limits
// and annotations (never its parameters). On failure, one line to stderr and exit status 1.
'use strict'

const fs = require('node:fs')
const openwhisk = require('openwhisk')

async function readStdin () {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return Buffer.concat(chunks).toString('utf8')
}

function fail (message) {
  process.stderr.write(`deploy-action: ${message}\n`)
  process.exit(1)
}

async function main () {
  const apihost = process.env.OW_APIHOST
  const auth = process.env.OW_AUTH
  if (!apihost || !auth) fail('set OW_APIHOST and OW_AUTH (uuid:key) in the environment')
  let spec
  try {
    spec = JSON.parse(await readStdin())
  } catch (err) {
    fail(`stdin is not a JSON deployment: ${err.message}`)
  }
  for (const key of ['name', 'zip', 'kind']) {
    if (typeof spec[key] !== 'string' || !spec[key]) fail(`the deployment needs "${key}" (a string)`)
  }
  let zip
  try {
    zip = fs.readFileSync(spec.zip)
  } catch (err) {
    fail(`cannot read the zip: ${err.message}`)
  }
  const ow = openwhisk({ apihost, api_key: auth })
  const options = { name: spec.name, action: zip, kind: spec.kind }
  if (spec.main) options.exec = { main: spec.main }
  for (const key of ['params', 'annotations', 'limits']) {
    if (spec[key] !== undefined) options[key] = spec[key]
  }
  let action
  try {
    action = await ow.actions.update(options)
  } catch (err) {
    // The client's message is the method, URL and the runner's error: no key in it.
    fail(`the update was refused: ${err.statusCode || ''} ${err.message}`.replace(/\s+/g, ' '))
  }
  const { name, version, limits, annotations } = action
  const exec = action.exec || {}
  process.stdout.write(JSON.stringify({ name, version, kind: exec.kind, binary: exec.binary, limits, annotations }) +
    '\n')
}

main()
