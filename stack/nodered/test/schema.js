/** The metrics line's JSON Schema, compiled once with ajv (draft 2020-12). */
'use strict';

const fs = require('fs');
const Ajv2020 = require('ajv/dist/2020');
const { SCHEMA_FILE } = require('./fixtures');

const schema = JSON.parse(fs.readFileSync(SCHEMA_FILE, 'utf8'));
const ajv = new Ajv2020({ allErrors: true, allowUnionTypes: true });
const validate = ajv.compile(schema);

/** The schema's complaints about `line` (parsed JSON), [] when it is valid. */
function lineErrors(line) {
    return validate(line) ? [] : validate.errors.map(e => (e.instancePath || '/') + ' ' + e.message);
}

module.exports = { schema, lineErrors };
