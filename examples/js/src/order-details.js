// `GET /api/orders/{id}` in JavaScript: the order, then concurrently its user, its store and
// every product of its lines, merged into one document.
//
// It answers what the Rust `order-details` example answers (examples/ecommerce/plugins/
// order-details):
//
//   {"order": {"id": 1001, "status": "delivered", "created_at": "...", "store_id": 10,
//              "total": 139.69,
//              "items": [{"product_id": 100, "quantity": 1, "unit_price": 74.99,
//                         "product": {...}}]},
//    "user": {"id": 1, "name": "Ada Lovelace", "loyalty_tier": "gold"},
//    "store": {"id": 10, "name": "...", "city": "London", ...},
//    "errors": []}
//
// No such order: 404. Orders service failing: 502. User, store or product service failing: 200
// with that part `null` and an entry in `errors` (`{"part": "store", "error": "..."}`; products
// are named `product:<id>`). JSON has one number type: a price of 35.0 is written `35`.
//
// Config (the route entry's `config` table): `fault_injection` (bool, default false) lets a
// request carrying `?fault=throw` throw an uncaught exception, which traps the instance; it
// exists to show how the gateway answers a failing plugin and is off unless a route turns it on.

import { get as getConfig } from "tessera:gateway/config@0.1.0";
import { requestId, routeParam } from "tessera:gateway/context@0.1.0";
import { send, sendAll } from "tessera:gateway/http-client@0.1.0";

// The fields of each record that may leave the gateway (the rest, e.g. a user's email, stay in).
const PUBLIC_USER = ["id", "name", "loyalty_tier"];
const STORE_SUMMARY = ["id", "name", "city", "address", "opening_hours"];
const PRODUCT_SUMMARY = ["id", "name", "category", "price"];

// Codes of the gateway's error shape, by status.
const ERROR_CODES = {
  400: "bad_request",
  404: "not_found",
  500: "internal",
  502: "upstream_unavailable",
  504: "upstream_timeout",
};

const U32_MAX = 2 ** 32 - 1;

/** An answer in the gateway's error shape: a status and a message the client reads. */
class Failure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Why a part of the answer is missing: `not found`, or what failed. */
class Missing extends Error {
  constructor(why, notFound = false) {
    super(why);
    this.notFound = notFound;
  }
}

export const requestHandler = {
  handle(request) {
    try {
      const settings = readConfig();
      if (settings.faultInjection && queryParam(request.query, "fault") === "throw") {
        throw new Error("fault injected by ?fault=throw");
      }
      return orderDetails();
    } catch (e) {
      if (e instanceof Failure) {
        return errorResponse(e.status, e.message);
      }
      throw e;
    }
  },
};

function readConfig() {
  let settings;
  try {
    settings = JSON.parse(getConfig());
  } catch {
    throw new Failure(500, "the plugin's config is not valid JSON");
  }
  if (!isObject(settings)) {
    throw new Failure(500, "the plugin's config must be a table");
  }
  const unknown = Object.keys(settings).filter((k) => k !== "fault_injection").sort();
  if (unknown.length > 0) {
    throw new Failure(500, `unknown config key \`${unknown[0]}\``);
  }
  const faultInjection = settings.fault_injection ?? false;
  if (typeof faultInjection !== "boolean") {
    throw new Failure(500, "config key `fault_injection` must be true or false");
  }
  return { faultInjection };
}

function orderDetails() {
  const id = routeParam("id");
  if (id === undefined) {
    throw new Failure(500, "route has no {id} parameter");
  }
  if (!/^[0-9]+$/.test(id)) {
    throw new Failure(400, "order id must be a number");
  }

  let order;
  try {
    order = jsonOf(call(`http://orders/orders/${id}`));
  } catch (e) {
    if (!(e instanceof Missing)) throw e;
    if (e.notFound) throw new Failure(404, `order ${id} not found`);
    throw new Failure(502, `orders service: ${e.message}`);
  }
  const problem = orderProblem(order);
  if (problem !== null) {
    throw new Failure(502, `orders service sent an unexpected order: ${problem}`);
  }

  // Everything else depends only on the order: the host sends these calls all at once, so this
  // takes as long as the slowest of them.
  const productIds = [...new Set(order.items.map((item) => item.product_id))];
  const results = sendAll([
    get(`http://users/users/${order.user_id}`),
    get(`http://stores/stores/${order.store_id}`),
    ...productIds.map((p) => get(`http://products/products/${p}`)),
  ]);

  const errors = [];
  const user = part(errors, "user", results[0], PUBLIC_USER);
  const store = part(errors, "store", results[1], STORE_SUMMARY);
  const products = new Map();
  productIds.forEach((productId, n) => {
    const product = part(errors, `product:${productId}`, results[2 + n], PRODUCT_SUMMARY);
    if (product !== null) products.set(productId, product);
  });

  return jsonResponse(200, {
    order: {
      id: order.id,
      status: order.status,
      created_at: order.created_at,
      store_id: order.store_id,
      total: total(order.items),
      items: order.items.map((item) => ({
        product_id: item.product_id,
        quantity: item.quantity,
        unit_price: item.unit_price,
        product: products.get(item.product_id) ?? null,
      })),
    },
    user,
    store,
    errors,
  });
}

function get(url) {
  return { method: "GET", url, headers: [], body: undefined, timeoutMs: undefined };
}

/** Sends one call and waits for it: a response, or the host's error as a `Missing`. */
function call(url) {
  try {
    return send(get(url));
  } catch (e) {
    // An `err` of the WIT result arrives as an exception carrying the error as its payload.
    throw new Missing(httpErrorText(e.payload));
  }
}

function httpErrorText(error) {
  switch (error?.tag) {
    case "denied":
      return `call denied: ${error.val}`;
    case "timeout":
      return "call timed out";
    case "connection-failed":
      return `connection failed: ${error.val}`;
    case "limit-exceeded":
      return `call limit exceeded: ${error.val}`;
    case "invalid-request":
      return `invalid request: ${error.val}`;
    case "body-too-large":
      return "response body too large";
    default:
      return "call failed";
  }
}

/** A service's JSON answer; throws `Missing` for a 404, another status or a bad body. */
function jsonOf(response) {
  if (response.status === 404) throw new Missing("not found", true);
  if (response.status < 200 || response.status >= 300) {
    throw new Missing(`service answered ${response.status}`);
  }
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(response.body ?? new Uint8Array()));
  } catch (e) {
    // Also a RangeError: nesting deeper than the engine's stack allows, from a hostile upstream.
    throw new Missing(`invalid JSON in response: ${e.message}`);
  }
}

/** A secondary part: the public fields of its JSON, or `null` plus an entry in `errors`. */
function part(errors, name, result, fields) {
  let value;
  try {
    if (result === undefined) throw new Missing("invalid request: missing result");
    if (result.tag === "err") throw new Missing(httpErrorText(result.val));
    value = jsonOf(result.val);
  } catch (e) {
    if (!(e instanceof Missing)) throw e;
    errors.push({ part: name, error: e.message });
    return null;
  }
  const record = isObject(value) ? value : {};
  return Object.fromEntries(fields.map((f) => [f, Object.hasOwn(record, f) ? record[f] : null]));
}

/** What is wrong with an order the orders service sent, or `null`. */
function orderProblem(order) {
  if (!isObject(order)) return "not an object";
  // Ids beyond 2^53 would silently lose digits in a JavaScript number: refuse them.
  for (const field of ["id", "user_id", "store_id"]) {
    if (!isId(order[field])) return `\`${field}\` must be an unsigned integer below 2^53`;
  }
  for (const field of ["status", "created_at"]) {
    if (typeof order[field] !== "string") return `\`${field}\` must be a string`;
  }
  if (!Array.isArray(order.items)) return "`items` must be an array";
  for (const [n, item] of order.items.entries()) {
    if (!isObject(item)) return `\`items[${n}]\` must be an object`;
    if (!isId(item.product_id)) {
      return `\`items[${n}].product_id\` must be an unsigned integer below 2^53`;
    }
    if (!isId(item.quantity) || item.quantity > U32_MAX) {
      return `\`items[${n}].quantity\` must be an unsigned integer`;
    }
    if (typeof item.unit_price !== "number") return `\`items[${n}].unit_price\` must be a number`;
  }
  return null;
}

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isId(value) {
  return Number.isSafeInteger(value) && value >= 0;
}

/** Sum of the lines, rounded to cents (halves away from zero, as the Rust example rounds). */
function total(items) {
  let cents = 0;
  for (const item of items) {
    cents += roundHalfAway(item.unit_price * 100) * item.quantity;
  }
  return cents / 100;
}

function roundHalfAway(x) {
  return Math.sign(x) * Math.floor(Math.abs(x) + 0.5);
}

function queryParam(query, name) {
  for (const pair of (query ?? "").split("&")) {
    const at = pair.indexOf("=");
    const key = at === -1 ? pair : pair.slice(0, at);
    if (key === name) return at === -1 ? "" : pair.slice(at + 1);
  }
  return undefined;
}

function jsonResponse(status, value) {
  return {
    status,
    headers: [{ name: "content-type", value: new TextEncoder().encode("application/json") }],
    body: new TextEncoder().encode(JSON.stringify(value)),
  };
}

/** The gateway's one error shape, as the host and the Rust SDK answer errors. */
function errorResponse(status, message) {
  return jsonResponse(status, {
    error: ERROR_CODES[status] ?? "server_error",
    message,
    request_id: requestId(),
  });
}
