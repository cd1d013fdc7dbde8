// A filter in JavaScript: requests must carry a header (e.g. a tenant), optionally with one of a
// set of values; the response carries the value back.
//
// Config (the route entry's `config` table):
//
// - `header` (string, required): the request header that must be present and not empty;
// - `allowed` (list of strings, optional): the values accepted; absent means any value;
// - `echo` (string, optional, default `x-checked-<header>`): the response header that carries
//   the accepted value back to the client.
//
// A request without the header gets 400, one whose value is not allowed gets 403, both in the
// gateway's error shape. A config the filter cannot use answers 500 and names the key.

import { get as getConfig } from "tessera:gateway/config@0.1.0";
import { requestId } from "tessera:gateway/context@0.1.0";
import { log } from "tessera:gateway/log@0.1.0";

const KEYS = new Set(["header", "allowed", "echo"]);

// RFC 9110 token characters.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

// The instance serves both `onRequest` and `onResponse` of one request, and only that request:
// the value accepted on the way in is what the response reports on the way out.
let accepted = null;
let echoHeader = null;

export const requestFilter = {
  onRequest(request) {
    let settings;
    try {
      settings = readConfig();
    } catch (e) {
      log("error", `require-header: ${e.message}`);
      return { tag: "respond", val: errorResponse(500, `invalid config: ${e.message}`) };
    }
    const name = settings.header;
    const values = request.headers.filter((h) => h.name === name).map((h) => h.value);
    const value = values.length > 0 ? new TextDecoder().decode(values[0]).trim() : "";
    if (value === "") {
      return { tag: "respond", val: errorResponse(400, `missing header ${name}`) };
    }
    if (values.length > 1 || (settings.allowed !== null && !settings.allowed.includes(value))) {
      return { tag: "respond", val: errorResponse(403, `${name} is not allowed`) };
    }
    accepted = value;
    echoHeader = settings.echo;
    return { tag: "continue", val: request };
  },

  onResponse(response) {
    if (accepted !== null) {
      response.headers = response.headers.filter((h) => h.name !== echoHeader);
      response.headers.push({ name: echoHeader, value: new TextEncoder().encode(accepted) });
    }
    return response;
  },
};

/** The route's config, checked: throws an error naming the key that is wrong. */
function readConfig() {
  let settings;
  try {
    settings = JSON.parse(getConfig());
  } catch {
    throw new Error("not valid JSON");
  }
  if (typeof settings !== "object" || settings === null || Array.isArray(settings)) {
    throw new Error("must be a table");
  }
  for (const key of Object.keys(settings).sort()) {
    if (!KEYS.has(key)) throw new Error(`unknown key \`${key}\``);
  }
  if (typeof settings.header !== "string" || !TOKEN.test(settings.header)) {
    throw new Error("`header` must be a header name");
  }
  const header = settings.header.toLowerCase();
  const allowed = settings.allowed ?? null;
  if (allowed !== null && !(Array.isArray(allowed) && allowed.every((v) => typeof v === "string"))) {
    throw new Error("`allowed` must be a list of strings");
  }
  const echo = settings.echo ?? `x-checked-${header}`;
  if (typeof echo !== "string" || !TOKEN.test(echo)) {
    throw new Error("`echo` must be a header name");
  }
  return { header, allowed, echo: echo.toLowerCase() };
}

function errorResponse(status, message) {
  const codes = { 400: "bad_request", 403: "forbidden", 500: "internal" };
  const body = { error: codes[status], message, request_id: requestId() };
  return {
    status,
    headers: [{ name: "content-type", value: new TextEncoder().encode("application/json") }],
    body: new TextEncoder().encode(JSON.stringify(body)),
  };
}
