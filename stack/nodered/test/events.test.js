'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { steps, T0, s3Event } = require('./fixtures');

const kafka = { topic: 'dit247', partition: 0, offset: '42', timestamp: String(T0), key: null, headers: {} };
const parse = (value) => steps.parseEvent(value, kafka, 'dit247', T0);

test('an ObjectCreated event of the upload bucket is one object to resize', () => {
    const event = s3Event('dit247', 'a b/+%/ünï.jpg', { eTag: '"0123abcd"', size: 99 });
    const parsed = parse(JSON.stringify(event));
    assert.equal(parsed.malformed, null);
    assert.deepEqual(parsed.ignored, []);
    assert.deepEqual(parsed.objects, [{
        kafka: kafka,
        event: { bucket: 'dit247', key: 'a b/+%/ünï.jpg', size: 99, etag: '0123abcd', name: 'ObjectCreated:Put',
                 t_event: T0, record: event.Records[0] }
    }]); // the key as given: versitygw does not URL-encode it
});

test('one object per record worth it; the others are counted by reason', () => {
    const event = { Records: [
        ...s3Event('dit247', 'one.jpg').Records,
        ...s3Event('dit247', 'gone.jpg', { eventName: 's3:ObjectRemoved:Delete' }).Records,
        ...s3Event('dit247c', 'one.jpg').Records,
        { eventName: 'ObjectCreated:Copy', s3: { bucket: { name: 'dit247' }, object: { key: '' } } },
        null,
        ...s3Event('dit247', 'two.png', { eventName: 'ObjectCreated:CompleteMultipartUpload' }).Records
    ] };
    const parsed = parse(JSON.stringify(event));
    assert.deepEqual(parsed.objects.map(o => o.event.key), ['one.jpg', 'two.png']);
    assert.deepEqual(parsed.ignored, ['not_object_created', 'other_bucket', 'no_key', 'not_object_created']);
});

test('the store\'s test event needs no work', () => {
    const parsed = parse(JSON.stringify({ Service: 'versitygw', Event: 's3:TestEvent', Bucket: 'dit247' }));
    assert.deepEqual(parsed, { objects: [], ignored: ['test_event'], malformed: null });
});

test('malformed records: not JSON, not an object, no Records', () => {
    const cases = [
        ['{"Records": [ not json', /^not JSON: /],
        ['', /^not JSON: /],
        [undefined, /^not JSON: /],
        [null, /^not an S3 event: a JSON null$/],
        ['null', /^not an S3 event: a JSON null$/],
        ['[1, 2]', /^not an S3 event: a JSON array$/],
        ['"text"', /^not an S3 event: a JSON string$/],
        ['42', /^not an S3 event: a JSON number$/],
        ['{"Records": {}}', /^not an S3 event: no Records array$/],
        ['{}', /^not an S3 event: no Records array$/]
    ];
    for (const [raw, reason] of cases) {
        const parsed = parse(raw);
        assert.deepEqual(parsed.objects, [], String(raw));
        assert.deepEqual(parsed.ignored, ['malformed']);
        assert.match(parsed.malformed.reason, reason, String(raw));
        assert.equal(parsed.malformed.t_event, T0);
    }
    assert.ok(parse('{' + 'x'.repeat(1000)).malformed.reason.length <= 'not JSON: '.length + 200);
});

test('an event of no interest to anyone is acked, not resized', () => {
    const parsed = parse(JSON.stringify({ Records: [] }));
    assert.deepEqual(parsed, { objects: [], ignored: [], malformed: null });
});

test('the tally of ignored records, and the node status it gives', () => {
    const tally = {};
    assert.equal(steps.tallyIgnored(tally, []), null);
    assert.equal(steps.tallyIgnored(tally, ['test_event']), 'ignored 1 (test_event)');
    assert.equal(steps.tallyIgnored(tally, ['other_bucket', 'malformed', 'other_bucket']), 'ignored 4 (other_bucket)');
    assert.deepEqual(tally, { test_event: 1, other_bucket: 2, malformed: 1 });
});
