"""The plugin's tests, run natively by ./test.sh. `Host` stands in for the gateway: it replaces
the imports of the generated bindings (which only work inside the gateway) for one test."""

import json
import unittest
from unittest import mock

from componentize_py_types import Err
from wit_world.exports.request_filter import RequestAction_Continue, RequestAction_Respond
from wit_world.imports import types

import app


class Host:
    """What the gateway would hand the plugin (config, request id). Use as a context manager."""

    def __init__(self, config=None, request_id="req-1"):
        self.config = json.dumps(config or {})
        self.request_id = request_id
        self._patches = [
            mock.patch("wit_world.imports.config.get", lambda: self.config),
            mock.patch("wit_world.imports.context.request_id", lambda: self.request_id),
        ]

    def __enter__(self):
        for patch in self._patches:
            patch.start()
        return self

    def __exit__(self, *_):
        for patch in reversed(self._patches):
            patch.stop()


def get(path, headers=None):
    fields = [types.Header(name=n, value=v.encode()) for n, v in (headers or {}).items()]
    return types.Request(method="GET", path=path, query=None, headers=fields, body=None)


def header(message, name):
    return next((h.value.decode() for h in message.headers if h.name == name), None)


class FilterTest(unittest.TestCase):
    def test_a_request_with_the_header_goes_on_unchanged(self):
        with Host():
            action = app.RequestFilter().on_request(get("/api/orders", {"x-client-id": "shop-7"}))
        self.assertIsInstance(action, RequestAction_Continue)
        self.assertEqual(action.value.path, "/api/orders")
        self.assertEqual(header(action.value, "x-client-id"), "shop-7")

    def test_a_request_without_the_header_or_with_a_blank_one_is_a_400(self):
        for request in [get("/api/orders"), get("/api/orders", {"x-client-id": "  "})]:
            with Host():
                action = app.RequestFilter().on_request(request)
            self.assertIsInstance(action, RequestAction_Respond)
            self.assertEqual(action.value.status, 400)
            self.assertEqual(
                json.loads(action.value.body),
                {
                    "error": "bad_request",
                    "message": "missing header x-client-id",
                    "request_id": "req-1",
                },
            )

    def test_the_config_names_the_header(self):
        with Host(config={"header": "X-Tenant"}):
            without = app.RequestFilter().on_request(get("/api", {"x-client-id": "shop-7"}))
            with_it = app.RequestFilter().on_request(get("/api", {"x-tenant": "acme"}))
        self.assertIsInstance(without, RequestAction_Respond)
        self.assertEqual(without.value.status, 400)
        self.assertIsInstance(with_it, RequestAction_Continue)

    def test_responses_are_marked(self):
        mine = types.Header(name="x-checked-by", value=b"someone else")
        response = types.Response(status=201, headers=[mine], body=None)
        with Host():
            response = app.RequestFilter().on_response(response)
        self.assertEqual(response.status, 201)
        marks = [h.value for h in response.headers if h.name == "x-checked-by"]
        self.assertEqual(marks, [b"{{name}}"])

    def test_the_gateway_refuses_a_misspelt_key_or_a_bad_header_name(self):
        # What the gateway runs at load: the `Err` value is what the operator reads.
        check = app.ConfigCheck()
        with self.assertRaises(Err) as typo:
            check.validate_config('{"haeder": "x"}')
        self.assertEqual(typo.exception.value, "haeder: unknown key, expected `header`")
        with self.assertRaises(Err) as bad:
            check.validate_config('{"header": "x client"}')
        self.assertEqual(bad.exception.value, "header: `x client` is not a header name")
        check.validate_config("{}")


if __name__ == "__main__":
    unittest.main()
