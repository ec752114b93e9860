"""The whole HTTP API fuzzed against the OpenAPI document the server itself serves (schemathesis),
once per kind of caller: no key, a key of each scope, and a registered device's credential. Every answer must be documented (status,
content type, headers, body), no request may get a 5xx, schema-invalid data must be refused, and no
route may take a request without the key its scope needs (tests/fuzz/api.py runs it).

The normal suite sends the same requests on every run (a fixed seed), and runs the coverage phase
(boundary values and schema-invalid data for every parameter, about a thousand requests) as admin
only, who reaches every route; the long profile (bench/hardening.py) runs every phase for every
caller with fresh inputs, TANDEM_FUZZ_SCALE times as many per operation."""

from __future__ import annotations

import os

import pytest

from tests.fuzz import api, tally

pytestmark = pytest.mark.integration
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
QUICK = ("examples", "fuzzing", "stateful")


@pytest.fixture(scope="module")
def served(tmp_path_factory, lfw_people):
    with api.served(tmp_path_factory.mktemp("api-fuzz"), lfw_people) as s:
        yield s


@pytest.mark.parametrize("scope", api.SCOPES)
def test_every_answer_is_documented_and_none_is_a_server_error(served, scope):
    phases = api.PHASES if LONG or scope == "admin" else QUICK
    outcome = api.fuzz(served, scope, examples=tally.budget(8), seed=None if LONG else 8, phases=phases)
    tally.add(f"api:{scope}", outcome.requests, outcome.server_errors)
    assert outcome.requests > 150  # every operation was reached, not only the schema loaded
    assert not outcome.failures and not outcome.errors, outcome.report()
    assert outcome.server_errors == 0, outcome.report()
    if scope == "fleet":  # the fleet's device key reaches one route: it registered devices
        assert outcome.statuses[201] > 0, outcome.report()
    elif scope != "none":  # past the key check: the registry's model and objects were found
        assert outcome.statuses[200] > 0, outcome.report()
