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
 *   LABKIT_NODERED_MAX_BODY_BYTES     max request body for http-in endpoints (required;
 *                                     labkit sets it: labkit.stack.services.nodered.MAX_BODY_BYTES)
 *
 * Flows read any other variable (LABKIT_*) with env.get("NAME") or ${NAME}.
 *
 * The upload endpoint's other limits (uploads in flight, stalled senders) are set here, in
 * UPLOAD_LIMITS, and enforced by the upload door (nodes/labkit-pipeline-steps/intake.js).
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
    if (!/^[1-9][0-9]*$/.test(raw || '')) {
        throw new Error('labkit Node-RED settings: environment variable LABKIT_NODERED_MAX_BODY_BYTES must be ' +
            'a positive number of bytes (labkit sets it from labkit.stack.services.nodered.MAX_BODY_BYTES)');
    }
    return Number(raw);
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

const steps = loadLibrary('labkit-pipeline-steps', 'nodes/labkit-pipeline-steps');
if (!steps) {
    throw new Error('labkit Node-RED settings: the labkit-pipeline-steps module guards /upload and could not be ' +
        'loaded; run `labkit install`');
}

/**
 * The upload endpoint's limits: the one place they are set (stack/nodered/README.md points here).
 * Bodies held at once stay under maxInFlight x maxBodyBytes.
 */
const UPLOAD_LIMITS = {
    maxBodyBytes: MAX_BODY_BYTES, // largest body (413 past it); the same for every http-in endpoint
    maxInFlight: 8, // uploads at once, from the body's first byte to the answer (503 + Retry-After past it)
    retryAfterS: 1, // the wait that 503 asks for
    stallMs: 10000, // a sender that sends nothing for this long is cut off (408, connection closed)
    bodyMs: 60000 // so is one whose body is not complete after this long
};

/**
 * The upload door (intake.js) on the file endpoints: the cap, the stall timeouts, and the body
 * read as raw bytes. The http-in node decodes a text/* body as UTF-8, and the admin app
 * (mounted at the same root) parses JSON and form bodies first, which changes the bytes of an
 * image sent with the wrong Content-Type; the door reads the body as a Buffer and marks it read,
 * so every parser after leaves it alone. It runs as both admin and http-node middleware (the
 * admin app's parsers come first; the second run lets the request through). (The node's own
 * "do not parse the body" option reads the body before any check, so it is not used.)
 */
const uploadDoor = steps.uploadIntake(UPLOAD_LIMITS, ['/upload']);

// kafkajs (the labkit-kafka nodes) re-arms a 1 ms timer on each broker connection while nothing is
// queued: Node-RED's idle CPU. kafka-idle.js arms it only when a request waits (same module
// instance as the nodes': one kafkajs in the install).
(function quietKafkaIdle() {
    const beside = require.main ? path.dirname(require.main.filename) : __dirname;
    let RequestQueue;
    try {
        RequestQueue = require(require.resolve('kafkajs/src/network/requestQueue', { paths: [beside, __dirname] }));
    } catch (e) {
        return; // no kafkajs here: nothing to quiet
    }
    if (typeof steps.quietIdleChecks !== 'function' || !steps.quietIdleChecks(RequestQueue)) {
        console.warn('labkit Node-RED settings: kafkajs\' request queue has changed; its idle timer is left as it is');
    }
})();

// TLS (natively): the store's webhook comes in on a TLS listener of its own, with the lab's
// certificate (tls-listener.js: LABKIT_NODERED_TLS_PORT, LABKIT_NODERED_PORT, LABKIT_TLS_CERT,
// LABKIT_TLS_KEY); Node-RED's own https requests (the store, the FaaS runner) trust the lab's
// CA through NODE_EXTRA_CA_CERTS. Compose leaves them empty: its hops stay plain.
if (process.env.LABKIT_NODERED_TLS_PORT) {
    require('./tls-listener').fromEnvironment(process.env);
}

module.exports = {
    // ---------------------------------------------------------------- server
    uiHost: process.env.LABKIT_NODERED_HOST || '127.0.0.1',
    // the port is given on the command line (--port)

    httpAdminRoot: '/',
    httpNodeRoot: '/',
    // http-in endpoints are deliberately NOT protected (no httpNodeAuth): the
    // object store's webhook cannot send credentials, flows check a secret path.
    // 413/411 for every http-in endpoint (intake.js: bodyLimit), then the upload door.
    httpNodeMiddleware: [steps.bodyLimit(MAX_BODY_BYTES), uploadDoor],
    httpAdminMiddleware: uploadDoor,
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
        steps: steps
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
