/**
 * Object keys: which ones /upload takes, and the resize action's output key for each.
 *
 * A key is refused before anything is stored when the store would keep the object under
 * another key, refuse it, or hide it, or when its output key would be invalid. What
 * versitygw (posix backend) does, checked against the real store
 * (tests/test_upload_path.py::test_the_store_rewrites_or_refuses_what_upload_refuses):
 *
 * - a leading '/', '//', '.' and '..' segments: resolved away ('./p/./a.jpg' is kept as
 *   'p/a.jpg', '/x.jpg' as 'x.jpg', 'a/../b.jpg' as 'b.jpg'); a lone '.' or '..' is a 400;
 * - a trailing '/': a folder, 400 DirectoryObjectContainsData;
 * - a segment over 255 bytes (a file name on its disk): 400 KeyTooLongError;
 * - NUL: 500; U+FFFE and U+FFFF: stored, but its XML listings show U+FFFD instead;
 * - a '.sgwtmp' segment: its own folder for temporary files, hidden from listings.
 *
 * Control characters and the line separators U+2028 and U+2029 (which the store takes) are
 * refused too: they break logs and line-based files such as the metrics file (Python's
 * str.splitlines splits at them).
 *
 * outputKey mirrors `output_key` in stack/actions/resize.py; the corpus in
 * stack/nodered/test/key-corpus.json pins the two together (checked by stack/nodered/test/keys.test.js and by
 * tests/test_upload_keys.py).
 */
'use strict';

const MAX_KEY_BYTES = 1024; // S3's limit on a key's UTF-8 length
const MAX_SEGMENT_BYTES = 255; // the store keeps each segment as a file or folder name
const RESERVED_SEGMENT = '.sgwtmp'; // versitygw's folder for temporary files
const OUTPUT_EXTENSIONS = { JPEG: 'jpg', PNG: 'png', WEBP: 'webp' };
const IMAGE_EXTENSIONS = new Set('jpg jpeg jpe jfif png gif webp bmp tif tiff mpo avif heic heif'.split(' '));
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/; // C0, DEL, C1, line and paragraph separators
const NOT_IN_XML = /[\ufffe\uffff]/; // XML 1.0 cannot carry them, and S3 listings are XML

/** `name` split as Python's posixpath.splitext does: leading dots do not start an extension. */
function splitExt(name) {
    const dot = name.lastIndexOf('.');
    if (dot > 0 && !/^\.+$/.test(name.slice(0, dot))) {
        return [name.slice(0, dot), name.slice(dot)];
    }
    return [name, ''];
}

/**
 * The resize action's output key: the image extension replaced by the format's, any other
 * name with it appended (`a/b/cat.png` -> `a/b/cat.jpg`, `scan.2024` -> `scan.2024.jpg`).
 *
 * @param format JPEG (the action's default, as the flow invokes it), PNG or WEBP
 * @throws RangeError when the output key would be longer than 1024 bytes (the action refuses it)
 */
function outputKey(key, format = 'JPEG') {
    const slash = key.lastIndexOf('/');
    const name = key.slice(slash + 1);
    let [stem, ext] = splitExt(name);
    if (!IMAGE_EXTENSIONS.has(ext.slice(1).toLowerCase())) {
        stem = name;
    }
    const out = key.slice(0, slash + 1) + stem + '.' + OUTPUT_EXTENSIONS[format];
    if (Buffer.byteLength(out, 'utf8') > MAX_KEY_BYTES) {
        throw new RangeError('gives an output key longer than ' + MAX_KEY_BYTES + ' bytes');
    }
    return out;
}

/** "U+0009" for a character. */
function codePoint(ch) {
    return 'U+' + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
}

/** What is wrong with the characters of `key`, or null. */
function characterProblem(key) {
    if (!key.isWellFormed()) {
        return 'is not valid UTF-8 (it has a lone surrogate): send the key as UTF-8';
    }
    const control = key.match(CONTROL);
    if (control) {
        return 'has a control character or line separator (' + codePoint(control[0]) + ' at character ' +
            control.index + '), which breaks logs and the line-based metrics file: remove it';
    }
    const xml = key.match(NOT_IN_XML);
    if (xml) {
        return 'has ' + codePoint(xml[0]) + ", which the store's listings cannot carry (they show U+FFFD " +
            'instead): remove it';
    }
    return null;
}

/** What is wrong with the segments of `key` (split at '/'), or null. */
function segmentProblem(key) {
    const segments = key.split('/');
    if (key.startsWith('/')) {
        return "starts with '/', which the store drops (it would keep the object under another key): " +
            "remove the leading '/'";
    }
    if (segments.includes('')) {
        return "has an empty segment ('//' or a trailing '/'), which the store drops or takes for a folder: " +
            "remove the extra '/'";
    }
    if (segments.includes('.') || segments.includes('..')) {
        return "has a '.' or '..' segment, which the store resolves (it would keep the object under another " +
            'key, or refuse it): remove it';
    }
    if (segments.includes(RESERVED_SEGMENT)) {
        return "has a '" + RESERVED_SEGMENT + "' segment, the store's own folder for temporary files, hidden " +
            'from listings: rename it';
    }
    const longest = Math.max(...segments.map(s => Buffer.byteLength(s, 'utf8')));
    return longest > MAX_SEGMENT_BYTES ? 'has a segment of ' + longest + ' bytes in UTF-8; the store allows ' +
        MAX_SEGMENT_BYTES + ' (a file name on its disk): shorten it' : null;
}

/** What is wrong with the output key of `key`, or null. */
function outputProblem(key) {
    const bytes = Buffer.byteLength(key, 'utf8');
    if (bytes > MAX_KEY_BYTES) {
        return 'is ' + bytes + ' bytes in UTF-8; S3 allows ' + MAX_KEY_BYTES + ': shorten it';
    }
    let out;
    try {
        out = outputKey(key);
    } catch (err) {
        return err.message + " (its extension replaced by '.jpg', the resized image's key): shorten it";
    }
    const last = Buffer.byteLength(out.slice(out.lastIndexOf('/') + 1), 'utf8');
    return last > MAX_SEGMENT_BYTES ? "gives an output key whose last segment is " + last + " bytes ('.jpg' " +
        'appended); the store allows ' + MAX_SEGMENT_BYTES + ': shorten the name' : null;
}

/**
 * Why /upload refuses `key`, as the rest of a sentence that starts with the key's name
 * ("has a '.' or '..' segment, ...: remove it"), or null when the key is fine.
 */
function keyProblem(key) {
    if (key === undefined || key === '') {
        return 'is missing or empty: send ?key=<object key>';
    }
    if (typeof key !== 'string') {
        return 'must be given once, as text';
    }
    return characterProblem(key) || segmentProblem(key) || outputProblem(key);
}

/**
 * Whether a raw query value (as sent, still percent-encoded) decodes to valid UTF-8.
 *
 * Express's query parser keeps a value it cannot decode as it was sent ('%FF.jpg' stays
 * '%FF.jpg'), which would store the object under another key than the client meant.
 */
function decodesStrictly(raw) {
    try {
        decodeURIComponent(raw.replace(/\+/g, ' '));
        return true;
    } catch (err) {
        return false;
    }
}

/** The raw (undecoded) values of query parameter `name` in a request URL. */
function rawQueryValues(url, name) {
    const query = String(url || '').split('#')[0].split('?').slice(1).join('?');
    const named = part => {
        const raw = part.split('=')[0].replace(/\+/g, ' ');
        return (decodesStrictly(raw) ? decodeURIComponent(raw) : raw) === name;
    };
    return query.split('&').filter(named).map(part => part.split('=').slice(1).join('='));
}

module.exports = {
    MAX_KEY_BYTES, MAX_SEGMENT_BYTES, outputKey, keyProblem, decodesStrictly, rawQueryValues
};
