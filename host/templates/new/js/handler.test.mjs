// The plugin's tests, in Node (`npm test`): test/mock-host.mjs stands in for the gateway.

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { configCheck, requestHandler } from "../src/plugin.js";
import { host, reset } from "./mock-host.mjs";

beforeEach(reset);

const get = (path) => ({
  method: "GET",
  path,
  query: undefined,
  headers: [],
  body: new Uint8Array(),
});

const json = (response) => JSON.parse(new TextDecoder().decode(response.body));

const header = (response, name) => {
  const found = response.headers.find((h) => h.name === name);
  return found && new TextDecoder().decode(found.value);
};

test("greets the path parameter with the configured greeting", () => {
  host.config = JSON.stringify({ greeting: "Hi" });
  host.params = { name: "ada" };
  const response = requestHandler.handle(get("/hello/ada"));
  assert.equal(response.status, 200);
  assert.equal(header(response, "content-type"), "application/json");
  assert.deepEqual(json(response), { message: "Hi, ada!", request_id: "req-1" });
  assert.deepEqual(host.logs, [{ level: "debug", message: "greeting ada" }]);
});

test("greets the world with the default greeting", () => {
  const response = requestHandler.handle(get("/hello"));
  assert.equal(response.status, 200);
  assert.equal(json(response).message, "Hello, world!");
});

test("a long name is a 400 in the gateway's error shape", () => {
  host.params = { name: "a".repeat(65) };
  host.requestId = "req-2";
  const response = requestHandler.handle(get(`/hello/${"a".repeat(65)}`));
  assert.equal(response.status, 400);
  assert.deepEqual(json(response), {
    error: "bad_request",
    message: "name: at most 64 characters",
    request_id: "req-2",
  });
});

test("the gateway refuses a misspelt key or an empty greeting", () => {
  // What the gateway runs at load: the payload is what the operator reads.
  assert.throws(() => configCheck.validateConfig('{"greting": "Hi"}'), {
    payload: "greting: unknown key, expected `greeting`",
  });
  assert.throws(() => configCheck.validateConfig('{"greeting": " "}'), {
    payload: "greeting: must not be empty",
  });
  configCheck.validateConfig("{}");
  configCheck.validateConfig('{"greeting": "Hej"}');
});
