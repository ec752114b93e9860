"""How errors become HTTP answers: status, body and the headers each status calls for."""

from __future__ import annotations

import json

import pytest

from tandem.errors import InvalidRequest, NotFound, RateLimited, Unauthenticated, Unavailable
from tandem.server.auth import bearer_token, forbidden, unauthenticated
from tandem.server.responses import error_response


def test_errors_carry_status_body_and_headers():
    r = error_response(InvalidRequest("input 'x' is not an input"))
    assert r.status_code == 400 and json.loads(r.body) == {"error": "input 'x' is not an input"}
    assert error_response(NotFound("no model")).status_code == 404
    r = error_response(RateLimited("slow down", retry_after=0.2))
    assert r.status_code == 429 and r.headers["retry-after"] == "1"  # whole seconds, rounded up
    r = error_response(Unavailable("database down", retry_after=2.5))
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    r = error_response(unauthenticated("no key"))
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="tandem"'
    r = error_response(unauthenticated("bad key", "invalid_token"))
    assert r.headers["www-authenticate"] == 'Bearer realm="tandem", error="invalid_token"'
    r = error_response(forbidden("wrong scope", "admin"))
    assert r.status_code == 403 and 'error="insufficient_scope", scope="admin"' in r.headers["www-authenticate"]


@pytest.mark.parametrize(("header", "message"), [
    (None, "this route needs an API key"),
    ("", "this route needs an API key"),
    ("Token abc", "must be 'Bearer <api key>'"),
    ("Bearer", "must be 'Bearer <api key>'"),
    ("Bearer " + "x" * 600, "unknown or revoked API key"),
    ("Bearer ключ", "unknown or revoked API key"),
])
def test_bearer_header_problems_are_401s_that_never_echo_the_key(header, message):
    with pytest.raises(Unauthenticated) as e:
        bearer_token(header)
    assert e.value.status_code == 401 and message in str(e.value) and "xxxx" not in str(e.value)


def test_bearer_token_is_taken_whatever_the_scheme_case():
    assert bearer_token("bearer tdm_abc") == "tdm_abc" and bearer_token("Bearer  tdm_abc ") == "tdm_abc"
