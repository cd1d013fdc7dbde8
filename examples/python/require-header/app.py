"""A filter in Python: requests must carry a header (e.g. a tenant), optionally with one of a set
of values; the response carries the value back.

Config (the route entry's `config` table):

- `header` (string, required): the request header that must be present and not empty;
- `allowed` (list of strings, optional): the values accepted; absent means any value;
- `echo` (string, optional, default `x-checked-<header>`): the response header that carries
  the accepted value back to the client.

A request without the header gets 400, one whose value is not allowed gets 403, both in the
gateway's error shape. A config the filter cannot use answers 500 and names the key.
"""

import json

from wit_world import exports
from wit_world.imports import config, context, log, types
from wit_world.exports.request_filter import RequestAction_Continue, RequestAction_Respond

KEYS = {"header", "allowed", "echo"}

# The instance serves both `on_request` and `on_response` of one request, and only that request:
# the value accepted on the way in is what the response reports on the way out.
accepted = None
echo_header = None


class RequestFilter(exports.RequestFilter):
    def on_request(self, request: types.Request):
        global accepted, echo_header
        try:
            settings = read_config()
        except ValueError as e:
            log.log(log.Level.ERROR, f"require-header: {e}")
            return RequestAction_Respond(error_response(500, f"invalid config: {e}"))
        name = settings["header"]
        values = [h.value for h in request.headers if h.name == name]
        if not values or not values[0].strip():
            return RequestAction_Respond(error_response(400, f"missing header {name}"))
        value = values[0].decode("utf-8", "replace").strip()
        allowed = settings["allowed"]
        if len(values) > 1 or (allowed is not None and value not in allowed):
            return RequestAction_Respond(error_response(403, f"{name} is not allowed"))
        accepted = value
        echo_header = settings["echo"]
        return RequestAction_Continue(request)

    def on_response(self, response: types.Response) -> types.Response:
        if accepted is not None:
            response.headers = [h for h in response.headers if h.name != echo_header]
            response.headers.append(types.Header(name=echo_header, value=accepted.encode()))
        return response


def read_config():
    """The route's config, checked: raises `ValueError` naming the key that is wrong."""
    try:
        settings = json.loads(config.get())
    except ValueError:
        raise ValueError("not valid JSON") from None
    if not isinstance(settings, dict):
        raise ValueError("must be a table")
    for key in sorted(settings):
        if key not in KEYS:
            raise ValueError(f"unknown key `{key}`")
    header = settings.get("header")
    if not is_header_name(header):
        raise ValueError("`header` must be a header name")
    header = header.lower()
    allowed = settings.get("allowed")
    if allowed is not None and not (
        isinstance(allowed, list) and all(isinstance(v, str) for v in allowed)
    ):
        raise ValueError("`allowed` must be a list of strings")
    echo = settings.get("echo", f"x-checked-{header}")
    if not is_header_name(echo):
        raise ValueError("`echo` must be a header name")
    return {"header": header, "allowed": allowed, "echo": echo.lower()}


def is_header_name(value):
    # RFC 9110 token characters.
    token = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return isinstance(value, str) and value != "" and all(c in token for c in value)


def error_response(status, message):
    codes = {400: "bad_request", 403: "forbidden", 500: "internal"}
    body = {"error": codes[status], "message": message, "request_id": context.request_id()}
    return types.Response(
        status=status,
        headers=[types.Header(name="content-type", value=b"application/json")],
        body=json.dumps(body, separators=(",", ":")).encode(),
    )
