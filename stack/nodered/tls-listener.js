/**
 * Node-RED's TLS listener: the same app as its plain port, over TLS with the lab's certificate.
 *
 * The object store's webhook carries its secret in the URL (/hooks/<token>/object-created),
 * and it comes in through the `store-webhook` hop, a Toxiproxy proxy that any local user can
 * repoint. Over TLS, a repointed hop gets a ClientHello and nothing else: the store (Go,
 * SSL_CERT_FILE) trusts the lab's CA only, and only this listener holds its certificate's key.
 * Browsers and labkit keep using the plain port, on loopback.
 *
 * Each request is passed on unchanged to Node-RED's own port in this same process; the
 * answer comes back the same way. settings.js starts it when LABKIT_NODERED_TLS_PORT is set.
 */
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');

/**
 * Listen with TLS on `host:port` and pass every request to `host:target` (plain HTTP).
 * A listener that cannot bind stops the process: a silent gap would only show as lost webhooks.
 */
function start({ host, port, target, cert, key }) {
    const options = { cert: fs.readFileSync(cert), key: fs.readFileSync(key), minVersion: 'TLSv1.2' };
    const server = https.createServer(options, (req, res) => {
        const forward = http.request({ host, port: target, method: req.method, path: req.url, headers: req.headers },
            (answer) => {
                res.writeHead(answer.statusCode, answer.statusMessage, answer.headers);
                answer.pipe(res);
            });
        forward.on('error', (err) => {
            if (!res.headersSent) {
                res.writeHead(502, { 'Content-Type': 'text/plain' });
            }
            res.end('Bad Gateway: ' + err.code);
        });
        req.pipe(forward);
    });
    server.on('error', (err) => {
        console.error('labkit Node-RED TLS listener on ' + host + ':' + port + ' failed: ' + err.message);
        process.exit(1);
    });
    server.listen(port, host);
    return server;
}

/** Start the listener from the environment labkit gives Node-RED, when it asks for one. */
function fromEnvironment(env) {
    if (!env.LABKIT_NODERED_TLS_PORT) {
        return null;
    }
    return start({
        host: env.LABKIT_NODERED_HOST || '127.0.0.1',
        port: Number(env.LABKIT_NODERED_TLS_PORT),
        target: Number(env.LABKIT_NODERED_PORT),
        cert: env.LABKIT_TLS_CERT,
        key: env.LABKIT_TLS_KEY
    });
}

module.exports = { start, fromEnvironment };
