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
 * retry subflow's decision; shared holds the helpers every stage uses.
 */
'use strict';

module.exports = Object.assign({},
    require('./shared'),
    require('./retry'),
    require('./upload'),
    require('./events'),
    require('./invoke'),
    require('./webhook'),
    require('./record'));
