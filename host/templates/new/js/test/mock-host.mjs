// Stands in for the gateway's interfaces (wit/gateway.wit) when the tests run in Node. A test
// sets what the gateway would hand the plugin (`host.config`, `host.params`, ...) and reads what
// the plugin did (`host.logs`); `reset()` starts afresh, as the gateway starts a fresh instance
// for every request. Outgoing calls (`tessera:gateway/http-client`) and buckets are not
// imitated: add them here when the plugin uses them.

export const host = {};

export function reset() {
  host.config = "{}";
  host.params = {};
  host.requestId = "req-1";
  host.route = "/";
  host.clientAddress = "127.0.0.1";
  host.logs = [];
}

reset();

// tessera:gateway/config
export function get() {
  return host.config;
}

// tessera:gateway/context
export function routeParam(name) {
  return Object.hasOwn(host.params, name) ? host.params[name] : undefined;
}

export function routeParams() {
  return Object.entries(host.params);
}

export function requestId() {
  return host.requestId;
}

export function route() {
  return host.route;
}

export function clientAddress() {
  return host.clientAddress;
}

// tessera:gateway/log
export function log(level, message) {
  host.logs.push({ level, message });
}
