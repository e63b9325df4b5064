/**
 * How labkit-kafka amends kafkajs 2.2.4 where it has no setting for what the lab needs
 * (coordinator.js, lastbroker.js): one method of one kafkajs class, replaced by a wrapper that
 * calls the original, once per process however often the node module is loaded.
 */
'use strict';

/**
 * Replace `Class.prototype[name]` with `makeWrapper(original)`, unless already done.
 *
 * @returns true when the method is (now) wrapped, false when the class does not have it
 */
function wrapOnce(Class, name, makeWrapper) {
    const proto = Class && Class.prototype;
    if (!proto || typeof proto[name] !== 'function') {
        return false;
    }
    if (proto[name].labkitWrapped === name) {
        return true;
    }
    const wrapper = makeWrapper(proto[name]);
    wrapper.labkitWrapped = name;
    proto[name] = wrapper;
    return true;
}

module.exports = { wrapOnce };
