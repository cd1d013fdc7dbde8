"""The plugin's tests, run natively by ./test.sh. `Host` stands in for the gateway: it replaces
the imports of the generated bindings (which only work inside the gateway) for one test."""

import json
import unittest
from unittest import mock

from componentize_py_types import Err
from wit_world.imports import types

import app


class Host:
    """What the gateway would hand the plugin (config, path parameters, request id), and the
    log lines the plugin wrote. Use as a context manager."""

    def __init__(self, config=None, params=None, request_id="req-1"):
        self.config = json.dumps(config or {})
        self.params = params or {}
        self.request_id = request_id
        self.logs = []
        self._patches = [
            mock.patch("wit_world.imports.config.get", lambda: self.config),
            mock.patch("wit_world.imports.context.route_param", self.params.get),
            mock.patch("wit_world.imports.context.request_id", lambda: self.request_id),
            mock.patch("wit_world.imports.log.log", lambda level, m: self.logs.append((level, m))),
        ]

    def __enter__(self):
        for patch in self._patches:
            patch.start()
        return self

    def __exit__(self, *_):
        for patch in reversed(self._patches):
            patch.stop()


def get(path):
    return types.Request(method="GET", path=path, query=None, headers=[], body=b"")


def header(response, name):
    return next((h.value.decode() for h in response.headers if h.name == name), None)


class HandlerTest(unittest.TestCase):
    def test_greets_the_path_parameter_with_the_configured_greeting(self):
        with Host(config={"greeting": "Hi"}, params={"name": "ada"}) as host:
            response = app.RequestHandler().handle(get("/hello/ada"))
        self.assertEqual(response.status, 200)
        self.assertEqual(header(response, "content-type"), "application/json")
        self.assertEqual(json.loads(response.body), {"message": "Hi, ada!", "request_id": "req-1"})
        self.assertEqual(host.logs, [(app.log.Level.DEBUG, "greeting ada")])

    def test_greets_the_world_with_the_default_greeting(self):
        with Host():
            response = app.RequestHandler().handle(get("/hello"))
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(response.body)["message"], "Hello, world!")

    def test_a_long_name_is_a_400_in_the_gateways_error_shape(self):
        with Host(params={"name": "a" * 65}, request_id="req-2"):
            response = app.RequestHandler().handle(get("/hello/" + "a" * 65))
        self.assertEqual(response.status, 400)
        self.assertEqual(
            json.loads(response.body),
            {"error": "bad_request", "message": "name: at most 64 characters", "request_id": "req-2"},
        )

    def test_the_gateway_refuses_a_misspelt_key_or_an_empty_greeting(self):
        # What the gateway runs at load: the `Err` value is what the operator reads.
        check = app.ConfigCheck()
        with self.assertRaises(Err) as typo:
            check.validate_config('{"greting": "Hi"}')
        self.assertEqual(typo.exception.value, "greting: unknown key, expected `greeting`")
        with self.assertRaises(Err) as empty:
            check.validate_config('{"greeting": " "}')
        self.assertEqual(empty.exception.value, "greeting: must not be empty")
        check.validate_config("{}")
        check.validate_config('{"greeting": "Hej"}')


if __name__ == "__main__":
    unittest.main()
