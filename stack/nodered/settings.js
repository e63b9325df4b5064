/**
 * Node-RED settings for the labkit stack.
 *
 * Everything comes from the environment; nothing secret lives in this file.
 * labkit starts Node-RED as
 *
 *   node CACHE/nodered/node_modules/node-red/red.js \
 *        --userDir DATA/nodered --settings stack/nodered/settings.js --port PORT
 *
 * Environment variables read here:
 *   LABKIT_NODERED_USER               admin/editor user name            (required)
 *   LABKIT_NODERED_PASSWORD           admin/editor password             (required)
 *   LABKIT_NODERED_CREDENTIAL_SECRET  key that encrypts flows_cred.json (optional;
 *                                     unset -> Node-RED generates one in userDir)
 *   LABKIT_NODERED_HOST               interface to bind (default 127.0.0.1)
 *   LABKIT_NODERED_LOG_LEVEL          console log level (default info)
 *   LABKIT_NODERED_MAX_BODY_BYTES     max request body for http-in endpoints
 *                                     (default 5242880 = 5 MiB, matches apiMaxLength)
 *
 * Flows read any other variable (LABKIT_*) with env.get("NAME") or ${NAME}.
 *
 * Function nodes get two libraries through functionGlobalContext (below):
 *   global.get('minio')  the `minio` npm library (S3 client)
 *   global.get('steps')  the pipeline's own steps, `labkit-pipeline-steps`
 *                        (nodes/labkit-pipeline-steps: plain functions, tested with
 *                        `node --test stack/nodered/test/*.test.js`)
 * Both are found through NODE_PATH (labkit sets it to the install's node_modules),
 * else beside the running Node-RED; the steps also beside this file.
 */
'use strict';

const crypto = require('crypto');
const path = require('path');

function requireEnv(name) {
    const value = process.env[name];
    if (value === undefined || value === '') {
        // Never fall back to a default credential: refuse to start instead.
        throw new Error(
            'labkit Node-RED settings: environment variable ' + name + ' must be set ' +
            '(admin API/editor credentials are taken from LABKIT_NODERED_USER and LABKIT_NODERED_PASSWORD)');
    }
    return value;
}

const adminUser = requireEnv('LABKIT_NODERED_USER');
const adminPasswordDigest = crypto.createHash('sha256').update(requireEnv('LABKIT_NODERED_PASSWORD'), 'utf8').digest();
const adminUserDigest = crypto.createHash('sha256').update(adminUser, 'utf8').digest();

/** Constant-time string comparison through fixed-length digests. */
function digestEquals(candidate, expectedDigest) {
    if (typeof candidate !== 'string') {
        return false;
    }
    const d = crypto.createHash('sha256').update(candidate, 'utf8').digest();
    return crypto.timingSafeEqual(d, expectedDigest);
}

const MAX_BODY_BYTES = (function () {
    const raw = process.env.LABKIT_NODERED_MAX_BODY_BYTES;
    const n = raw ? parseInt(raw, 10) : NaN;
    return Number.isFinite(n) && n > 0 ? n : 5 * 1024 * 1024;
})();

/**
 * A library for function nodes, or undefined (with a warning) when it cannot be loaded:
 * Node-RED still starts, the flow reports the gap.
 *
 * Looked for through NODE_PATH or a node_modules above this file, then beside node-red's
 * red.js (settings.js may live outside the install), then at `local` (relative to this file).
 */
function loadLibrary(name, local) {
    const beside = require.main ? path.dirname(require.main.filename) : __dirname;
    const places = [
        () => require(name),
        () => require(require.resolve(name, { paths: [beside] }))
    ];
    if (local) {
        places.push(() => require(path.join(__dirname, local)));
    }
    let broken = null; // found, but failed to load
    for (const load of places) {
        try {
            return load();
        } catch (e) {
            broken = e.code === 'MODULE_NOT_FOUND' ? broken : e;
        }
    }
    console.warn('labkit Node-RED settings: the ' + name + ' library ' +
        (broken ? 'failed to load (' + broken.message + ')' : 'is not installed') +
        '; function nodes will find it undefined in their global context');
    return undefined;
}

// Past this declared size we do not bother draining the request before replying.
const MAX_DRAIN_BYTES = 64 * 1024 * 1024;

/**
 * Body-size guard for http-in endpoints (runs before their body parsers).
 *
 * Node-RED's http-in node bounds JSON/urlencoded bodies with apiMaxLength but
 * answers 500 when the limit is hit, and does not bound other content types at
 * all. So: a declared Content-Length above the limit gets 413; a body without
 * Content-Length (chunked transfer) gets 411, because its size cannot be checked
 * before the parsers read it.
 */
function httpNodeBodyLimit(req, res, next) {
    const declared = req.headers['content-length'];
    if (declared !== undefined) {
        const length = Number(declared);
        if (!Number.isFinite(length) || length < 0) {
            res.status(400).type('text/plain').send('Bad Request: invalid Content-Length');
            return;
        }
        if (length > MAX_BODY_BYTES) {
            if (length > MAX_DRAIN_BYTES) {
                res.set('Connection', 'close');
            } else {
                req.resume(); // drain so the client can read the answer on this connection
            }
            res.status(413).type('text/plain').send('Payload Too Large: limit is ' + MAX_BODY_BYTES + ' bytes');
            return;
        }
        next();
        return;
    }
    if (req.headers['transfer-encoding'] !== undefined) {
        res.set('Connection', 'close');
        res.status(411).type('text/plain').send('Length Required: send a Content-Length header');
        return;
    }
    next();
}

/**
 * Raw bodies for the file endpoints (RAW_BODY_PATHS). The http-in node decodes a
 * text/* body as UTF-8, and the admin app (mounted at the same root) parses JSON and
 * form bodies first, which changes the bytes of an image sent with the wrong
 * Content-Type. Here those routes read the body as a Buffer (after the size check, so
 * at most MAX_BODY_BYTES) and mark it read, so that every parser after leaves it alone.
 * It runs as both admin and http-node middleware: the admin app's parsers come first.
 * (The node's own "do not parse the body" option reads the body before any size check,
 * so it is not used.)
 */
const RAW_BODY_PATHS = new Set(['/upload']);

function rawFileBody(req, res, next) {
    if (req.method !== 'POST' || !RAW_BODY_PATHS.has(req.path) || req._body || req.readableEnded) {
        next();
        return;
    }
    httpNodeBodyLimit(req, res, () => readRawBody(req, res, next));
}

function readRawBody(req, res, next) {
    const chunks = [];
    let size = 0;
    req.on('data', chunk => {
        size += chunk.length;
        if (size <= MAX_BODY_BYTES) {
            chunks.push(chunk);
        }
    });
    req.on('error', next);
    req.on('end', () => {
        if (size > MAX_BODY_BYTES) {
            res.status(413).type('text/plain').send('Payload Too Large: limit is ' + MAX_BODY_BYTES + ' bytes');
            return;
        }
        req.body = Buffer.concat(chunks, size);
        req._body = true;
        next();
    });
}

module.exports = {
    // ---------------------------------------------------------------- server
    uiHost: process.env.LABKIT_NODERED_HOST || '127.0.0.1',
    // the port is given on the command line (--port)

    httpAdminRoot: '/',
    httpNodeRoot: '/',
    // http-in endpoints are deliberately NOT protected (no httpNodeAuth): the
    // object store's webhook cannot send credentials, flows check a secret path.
    httpNodeMiddleware: [httpNodeBodyLimit, rawFileBody],
    httpAdminMiddleware: rawFileBody,
    apiMaxLength: '5mb',

    // ------------------------------------------------------------ security
    adminAuth: {
        type: 'credentials',
        users: [{ username: adminUser, permissions: '*' }],
        authenticate: function (username, password) {
            // evaluate both comparisons to keep the timing independent of which failed
            const userOk = digestEquals(username, adminUserDigest);
            const passwordOk = digestEquals(password, adminPasswordDigest);
            if (userOk && passwordOk) {
                return Promise.resolve({ username: adminUser, permissions: '*' });
            }
            return Promise.resolve(null);
        }
    },
    credentialSecret: process.env.LABKIT_NODERED_CREDENTIAL_SECRET || undefined,

    // --------------------------------------------------------------- flows
    flowFile: 'flows.json',
    flowFilePretty: true,

    functionExternalModules: false,
    // Libraries function nodes reach with global.get(name).
    functionGlobalContext: {
        minio: loadLibrary('minio'),
        steps: loadLibrary('labkit-pipeline-steps', 'nodes/labkit-pipeline-steps')
    },
    functionTimeout: 0,
    externalModules: {
        autoInstall: false,
        palette: { allowInstall: false, allowUpload: false, allowUpdate: false },
        modules: { allowInstall: false }
    },

    // ---------------------------------------------- no phoning home / extras
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },

    logging: {
        console: {
            level: process.env.LABKIT_NODERED_LOG_LEVEL || 'info',
            metrics: false,
            audit: false
        }
    },

    editorTheme: {
        page: { title: 'labkit Node-RED' },
        header: { title: 'labkit Node-RED' },
        projects: { enabled: false },
        tours: false,
        palette: {
            // no catalogue: the lab machines have no internet access
            catalogues: []
        },
        codeEditor: { lib: 'monaco' }
    },

    // Dashboard 2.0: the dashboard's path is set on its ui-base config node
    // ("/dashboard"), relative to httpNodeRoot.
    dashboard: {}
};
