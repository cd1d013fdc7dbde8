"""`GET /api/orders/{id}` in Python: the order, then concurrently its user, its store and every
product of its lines, merged into one document.

It answers what the Rust `order-details` example answers (examples/ecommerce/plugins/
order-details):

    {"order": {"id": 1001, "status": "delivered", "created_at": "...", "store_id": 10,
               "total": 139.69,
               "items": [{"product_id": 100, "quantity": 1, "unit_price": 74.99,
                          "product": {...}}]},
     "user": {"id": 1, "name": "Ada Lovelace", "loyalty_tier": "gold"},
     "store": {"id": 10, "name": "...", "city": "London", ...},
     "errors": []}

No such order: 404. Orders service failing: 502. User, store or product service failing: 200
with that part `null` and an entry in `errors` (`{"part": "store", "error": "..."}`; products
are named `product:<id>`).

Config (the route entry's `config` table): `fault_injection` (bool, default false) lets a
request carrying `?fault=raise` raise an uncaught exception, which traps the instance; it exists
to show how the gateway answers a failing plugin and is off unless a route turns it on.
"""

import json
import math

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, context, http_client, types

# The fields of each record that may leave the gateway (the rest, e.g. a user's email, stay in).
PUBLIC_USER = ("id", "name", "loyalty_tier")
STORE_SUMMARY = ("id", "name", "city", "address", "opening_hours")
PRODUCT_SUMMARY = ("id", "name", "category", "price")

# Codes of the gateway's error shape, by status.
ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    500: "internal",
    502: "upstream_unavailable",
    504: "upstream_timeout",
}

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1


class Failure(Exception):
    """An answer in the gateway's error shape: a status and a message the client reads."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Missing(Exception):
    """Why a part of the answer is missing: `not found`, or what failed."""

    def __init__(self, why, not_found=False):
        super().__init__(why)
        self.why = why
        self.not_found = not_found


class RequestHandler(exports.RequestHandler):
    def handle(self, request: types.Request) -> types.Response:
        try:
            settings = read_config()
            if settings["fault_injection"] and query_param(request.query, "fault") == "raise":
                raise RuntimeError("fault injected by ?fault=raise")
            return order_details()
        except Failure as failure:
            return error_response(failure.status, failure.message)


def read_config():
    try:
        settings = json.loads(config.get())
    except ValueError as e:
        raise Failure(500, "the plugin's config is not valid JSON") from e
    if not isinstance(settings, dict):
        raise Failure(500, "the plugin's config must be a table")
    unknown = sorted(set(settings) - {"fault_injection"})
    if unknown:
        raise Failure(500, f"unknown config key `{unknown[0]}`")
    fault_injection = settings.get("fault_injection", False)
    if not isinstance(fault_injection, bool):
        raise Failure(500, "config key `fault_injection` must be true or false")
    return {"fault_injection": fault_injection}


def order_details():
    order_id = context.route_param("id")
    if order_id is None:
        raise Failure(500, "route has no {id} parameter")
    if not (order_id.isascii() and order_id.isdigit()):
        raise Failure(400, "order id must be a number")

    try:
        order = json_of(call(f"http://orders/orders/{order_id}"))
    except Missing as missing:
        if missing.not_found:
            raise Failure(404, f"order {order_id} not found") from None
        raise Failure(502, f"orders service: {missing.why}") from None
    problem = order_problem(order)
    if problem is not None:
        raise Failure(502, f"orders service sent an unexpected order: {problem}")

    # Everything else depends only on the order: the host sends these calls all at once (at
    # most `max_in_flight` at a time), so this takes as long as the slowest of them.
    product_ids = list(dict.fromkeys(item["product_id"] for item in order["items"]))
    results = http_client.send_all(
        [
            get(f"http://users/users/{order['user_id']}"),
            get(f"http://stores/stores/{order['store_id']}"),
        ]
        + [get(f"http://products/products/{p}") for p in product_ids]
    )
    if len(results) != 2 + len(product_ids):
        raise Failure(500, "the host answered a different number of calls")

    errors = []
    user = part(errors, "user", results[0], PUBLIC_USER)
    store = part(errors, "store", results[1], STORE_SUMMARY)
    products = {}
    for product_id, result in zip(product_ids, results[2:]):
        product = part(errors, f"product:{product_id}", result, PRODUCT_SUMMARY)
        if product is not None:
            products[product_id] = product

    body = {
        "order": {
            "id": order["id"],
            "status": order["status"],
            "created_at": order["created_at"],
            "store_id": order["store_id"],
            "total": total(order["items"]),
            "items": [
                {
                    "product_id": item["product_id"],
                    "quantity": item["quantity"],
                    "unit_price": item["unit_price"],
                    "product": products.get(item["product_id"]),
                }
                for item in order["items"]
            ],
        },
        "user": user,
        "store": store,
        "errors": errors,
    }
    return json_response(200, body)


def get(url):
    return types.OutgoingRequest(method="GET", url=url, headers=[], body=None, timeout_ms=None)


def call(url):
    """Sends one call and waits for it: a response, or the host's error as a `Missing`."""
    try:
        return http_client.send(get(url))
    except Err as e:
        raise Missing(http_error_text(e.value)) from None


def http_error_text(error):
    if isinstance(error, types.HttpError_Denied):
        return f"call denied: {error.value}"
    if isinstance(error, types.HttpError_Timeout):
        return "call timed out"
    if isinstance(error, types.HttpError_ConnectionFailed):
        return f"connection failed: {error.value}"
    if isinstance(error, types.HttpError_LimitExceeded):
        return f"call limit exceeded: {error.value}"
    if isinstance(error, types.HttpError_InvalidRequest):
        return f"invalid request: {error.value}"
    if isinstance(error, types.HttpError_BodyTooLarge):
        return "response body too large"
    return "call failed"


def json_of(response):
    """A service's JSON answer; raises `Missing` for a 404, another status or a bad body."""
    if response.status == 404:
        raise Missing("not found", not_found=True)
    if not 200 <= response.status < 300:
        raise Missing(f"service answered {response.status}")
    try:
        return json.loads(response.body or b"", parse_constant=refuse, parse_float=finite)
    except (ValueError, RecursionError) as e:
        # RecursionError: nesting deeper than Python's stack allows, from a hostile upstream.
        raise Missing(f"invalid JSON in response: {e}") from None


def refuse(constant):
    raise ValueError(f"{constant} is not JSON")


def finite(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def part(errors, name, result, fields):
    """A secondary part: the public fields of its JSON, or `None` plus an entry in `errors`."""
    try:
        if isinstance(result, Err):
            raise Missing(http_error_text(result.value))
        value = json_of(result.value)
    except Missing as missing:
        errors.append({"part": name, "error": missing.why})
        return None
    record = value if isinstance(value, dict) else {}
    return {field: record.get(field) for field in fields}


def order_problem(order):
    """What is wrong with an order the orders service sent, or `None`."""
    if not isinstance(order, dict):
        return "not an object"
    for field in ("id", "user_id", "store_id"):
        if not is_int(order.get(field), U64_MAX):
            return f"`{field}` must be an unsigned integer"
    for field in ("status", "created_at"):
        if not isinstance(order.get(field), str):
            return f"`{field}` must be a string"
    items = order.get("items")
    if not isinstance(items, list):
        return "`items` must be an array"
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            return f"`items[{n}]` must be an object"
        if not is_int(item.get("product_id"), U64_MAX):
            return f"`items[{n}].product_id` must be an unsigned integer"
        if not is_int(item.get("quantity"), U32_MAX):
            return f"`items[{n}].quantity` must be an unsigned integer"
        price = item.get("unit_price")
        if isinstance(price, bool) or not isinstance(price, (int, float)):
            return f"`items[{n}].unit_price` must be a number"
    return None


def is_int(value, maximum):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum


def total(items):
    """Sum of the lines, rounded to cents (halves away from zero, as the Rust example rounds)."""
    cents = sum(round_half_away(item["unit_price"] * 100) * item["quantity"] for item in items)
    return cents / 100


def round_half_away(x):
    return math.copysign(math.floor(abs(x) + 0.5), x)


def query_param(query, name):
    for pair in (query or "").split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return value
    return None


def json_response(status, value):
    body = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    return types.Response(
        status=status,
        headers=[types.Header(name="content-type", value=b"application/json")],
        body=body,
    )


def error_response(status, message):
    """The gateway's one error shape, as the host and the Rust SDK answer errors."""
    return json_response(
        status,
        {
            "error": ERROR_CODES.get(status, "server_error"),
            "message": message,
            "request_id": context.request_id(),
        },
    )
