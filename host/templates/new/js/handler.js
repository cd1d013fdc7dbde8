// {{name}}: a Tessera handler plugin in JavaScript. It is a route's target and answers with a
// greeting:
//
//   [[routes]]
//   path = "/{{name}}/{name}"
//   handler = { plugin = "{{name}}", config = { greeting = "Hello" } }
//
// `GET /{{name}}/ada` → {"message":"Hello, ada!","request_id":"…"}
//
// The gateway's interfaces are the `tessera:gateway/...` imports (wit/gateway.wit); a request
// and a response are plain objects, header values and bodies `Uint8Array`s. The gateway creates
// a fresh instance for every request.

import { get as getConfig } from "tessera:gateway/config@0.1.0";
import { requestId, routeParam } from "tessera:gateway/context@0.1.0";
import { log } from "tessera:gateway/log@0.1.0";

const encoder = new TextEncoder();

export const requestHandler = {
  handle(_request) {
    // `configCheck` below has passed this config before the gateway serves with it.
    const config = readConfig(getConfig());
    const name = routeParam("name") ?? "world";
    if ([...name].length > 64) {
      return errorResponse(400, "name: at most 64 characters");
    }
    log("debug", `greeting ${name}`);
    return jsonResponse(200, { message: `${config.greeting}, ${name}!`, request_id: requestId() });
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
    if (key !== "greeting") {
      throw new ConfigError(`${key}: unknown key, expected \`greeting\``);
    }
  }
  const greeting = config.greeting ?? "Hello";
  if (typeof greeting !== "string") {
    throw new ConfigError("greeting: must be a string");
  }
  if (greeting.trim() === "") {
    throw new ConfigError("greeting: must not be empty");
  }
  return { greeting };
}

function jsonResponse(status, value) {
  return {
    status,
    headers: [{ name: "content-type", value: encoder.encode("application/json") }],
    body: encoder.encode(JSON.stringify(value)),
  };
}

/** The gateway's error shape: {"error": <code>, "message": ..., "request_id": ...}. */
function errorResponse(status, message) {
  const codes = { 400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found" };
  return jsonResponse(status, {
    error: codes[status] ?? "internal",
    message,
    request_id: requestId(),
  });
}
