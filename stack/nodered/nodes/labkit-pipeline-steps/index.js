/**
 * labkit-pipeline-steps: the logic of the pipeline's Node-RED flow, as plain functions.
 *
 * settings.js hands this module to function nodes as global.get("steps"). Each function node
 * of stack/nodered/flows.json is then one step of the story: it reads its settings (env.get)
 * and its state (flow/context), calls a function here, and sends the result on. Nothing here
 * knows Node-RED: the functions take and return plain objects, so `node --test` checks them
 * without a running stack (stack/nodered/test/).
 *
 * One file per stage: upload, events, invoke, webhook (and the join), record; retry is the
 * retry subflow's decision; trace gives each upload's event its own trace id; keys holds the
 * rules for object keys; shared holds the helpers every stage uses; burnrate is the second alert
 * policy (multiwindow, multi-burn-rate alerts on the error budget); metrics serves the metrics
 * file's new bytes to a reader elsewhere (GET /pipeline/metrics). intake is the upload
 * endpoint's door: HTTP middleware that settings.js runs before the flow, not a step; kafka-idle
 * stops kafkajs' idle timer loop (settings.js applies it).
 */
'use strict';

module.exports = Object.assign({},
    require('./shared'),
    require('./retry'),
    require('./keys'),
    require('./intake'),
    require('./upload'),
    require('./events'),
    require('./trace'),
    require('./invoke'),
    require('./webhook'),
    require('./record'),
    require('./burnrate'),
    require('./metrics'),
    require('./kafka-idle'));
