/**
 * The metrics file for a reader that does not share Node-RED's disk (a remote lab): the flow's
 * GET /pipeline/metrics answers with the bytes the reader has not got yet and the file's size,
 * and the reader appends them to its copy (labkit.stack.backends.remote.RemoteBackend.pull_metrics).
 * Only the new bytes are read, so polling costs what was appended, not the whole file.
 */
'use strict';

const fs = require('fs');

// The most one answer carries; a reader whose copy is still short asks again from its new size.
const MAX_METRICS_CHUNK = 4 * 1024 * 1024;

/**
 * The file's bytes from `offset` (at most `max`) and its size; a file not written yet is empty.
 * An offset past the end gives no bytes (the reader sees the file is shorter than its copy).
 */
async function metricsFrom(file, offset, max = MAX_METRICS_CHUNK) {
    let handle;
    try {
        handle = await fs.promises.open(file, 'r');
    } catch (e) {
        if (e.code === 'ENOENT') {
            return { size: 0, bytes: Buffer.alloc(0) };
        }
        throw e;
    }
    try {
        const { size } = await handle.stat();
        const start = Number.isSafeInteger(offset) && offset > 0 ? Math.min(offset, size) : 0;
        const bytes = Buffer.alloc(Math.min(size - start, max));
        let got = 0;
        while (got < bytes.length) {
            const { bytesRead } = await handle.read(bytes, got, bytes.length - got, start + got);
            if (bytesRead === 0) {
                break;
            }
            got += bytesRead;
        }
        return { size, bytes: bytes.subarray(0, got) };
    } finally {
        await handle.close();
    }
}

module.exports = { metricsFrom, MAX_METRICS_CHUNK };
