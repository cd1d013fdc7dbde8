// {{name}}: a Tessera filter plugin in JavaScript. Requests must carry a header (`x-client-id`
// unless the config names another); without it the gateway answers 400 and the route's target
// never sees the request. Responses on their way back get `x-checked-by: {{name}}`.
//
//   [[routes]]
//   path = "/api/{*rest}"
//   upstream = "api"
//
//   [[routes.filters]]
//   plugin = "{{name}}"
//   config = { header = "x-client-id" }
//
// The gateway's interfaces are the `tessera:gateway/...` imports (wit/gateway.wit); a request
// and a response are plain objects, header names lower-case, header values and bodies
// `Uint8Array`s. The gateway creates a fresh instance for every request; it serves both
// `onRequest` and `onResponse` of that request.

import { get as getConfig } from "tessera:gateway/config@0.1.0";
import { requestId } from "tessera:gateway/context@0.1.0";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// RFC 9110 token characters: what a header name may be made of.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export const requestFilter = {
  onRequest(request) {
    // `configCheck` below has passed this config before the gateway serves with it.
    const config = readConfig(getConfig());
    const value = request.headers.find((h) => h.name === config.header)?.value;
    if (value === undefined || decoder.decode(value).trim() === "") {
      // The route's target is not called; the client gets this answer.
      return { tag: "respond", val: errorResponse(400, `missing header ${config.header}`) };
    }
    return { tag: "continue", val: request };
  },

  onResponse(response) {
    response.headers = response.headers.filter((h) => h.name !== "x-checked-by");
    response.headers.push({ name: "x-checked-by", value: encoder.encode("{{name}}") });
    return response;
  },
};

// The gateway calls this with the `config` of every route entry that uses the plugin, when it
// loads the plugin or the config (and in `tessera check`): a throw refuses the change, and the
// operator reads its message next to the route.
export const configCheck = {
  validateConfig(json) {
    readConfig(json);
  },
};

/** A config the plugin cannot use. `payload` is what `config-check` answers the gateway. */
class ConfigError extends Error {
  constructor(message) {
    super(message);
    this.payload = message;
  }
}

/** The route entry's `config` table (JSON), read and checked; the error names the key. */
function readConfig(json) {
  const config = JSON.parse(json);
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new ConfigError("the config must be a table");
  }
  for (const key of Object.keys(config)) {
    if (key !== "header") {
      throw new ConfigError(`${key}: unknown key, expected \`header\``);
    }
  }
  const header = config.header ?? "x-client-id";
  if (typeof header !== "string" || !TOKEN.test(header)) {
    throw new ConfigError(`header: \`${header}\` is not a header name`);
  }
  // The gateway hands plugins header names in lower case.
  return { header: header.toLowerCase() };
}

/** The gateway's error shape: {"error": <code>, "message": ..., "request_id": ...}. */
function errorResponse(status, message) {
  const codes = { 400: "bad_request", 401: "unauthorized", 403: "forbidden" };
  const body = { error: codes[status] ?? "internal", message, request_id: requestId() };
  return {
    status,
    headers: [{ name: "content-type", value: encoder.encode("application/json") }],
    body: encoder.encode(JSON.stringify(body)),
  };
}
