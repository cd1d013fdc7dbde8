// The plugin's tests, in Node (`npm test`): test/mock-host.mjs stands in for the gateway.

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { configCheck, requestFilter } from "../src/plugin.js";
import { host, reset } from "./mock-host.mjs";

beforeEach(reset);

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const get = (path, headers = {}) => ({
  method: "GET",
  path,
  query: undefined,
  headers: Object.entries(headers).map(([name, value]) => ({ name, value: encoder.encode(value) })),
  body: undefined,
});

const header = (message, name) => {
  const found = message.headers.find((h) => h.name === name);
  return found && decoder.decode(found.value);
};

test("a request with the header goes on unchanged", () => {
  const request = get("/api/orders", { "x-client-id": "shop-7" });
  const action = requestFilter.onRequest(request);
  assert.equal(action.tag, "continue");
  assert.equal(action.val.path, "/api/orders");
  assert.equal(header(action.val, "x-client-id"), "shop-7");
});

test("a request without the header or with a blank one is a 400", () => {
  for (const request of [get("/api/orders"), get("/api/orders", { "x-client-id": "  " })]) {
    const action = requestFilter.onRequest(request);
    assert.equal(action.tag, "respond");
    assert.equal(action.val.status, 400);
    assert.deepEqual(JSON.parse(decoder.decode(action.val.body)), {
      error: "bad_request",
      message: "missing header x-client-id",
      request_id: "req-1",
    });
  }
});

test("the config names the header", () => {
  host.config = JSON.stringify({ header: "X-Tenant" });
  const without = requestFilter.onRequest(get("/api", { "x-client-id": "shop-7" }));
  assert.equal(without.tag, "respond");
  assert.equal(without.val.status, 400);
  const with_ = requestFilter.onRequest(get("/api", { "x-tenant": "acme" }));
  assert.equal(with_.tag, "continue");
});

test("responses are marked", () => {
  const response = requestFilter.onResponse({
    status: 201,
    headers: [{ name: "x-checked-by", value: encoder.encode("someone else") }],
    body: undefined,
  });
  assert.equal(response.status, 201);
  assert.deepEqual(
    response.headers.filter((h) => h.name === "x-checked-by").map((h) => decoder.decode(h.value)),
    ["{{name}}"],
  );
});

test("the gateway refuses a misspelt key or a bad header name", () => {
  // What the gateway runs at load: the payload is what the operator reads.
  assert.throws(() => configCheck.validateConfig('{"haeder": "x"}'), {
    payload: "haeder: unknown key, expected `header`",
  });
  assert.throws(() => configCheck.validateConfig('{"header": "x client"}'), {
    payload: "header: `x client` is not a header name",
  });
  configCheck.validateConfig("{}");
});
