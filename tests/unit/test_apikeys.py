import hashlib

import pytest

from tandem.security import apikeys


def test_new_tokens_are_random_well_formed_and_parse_back():
    token, parsed = apikeys.new_token()
    assert token == f"tdm_{parsed.key_id}_{parsed.secret}"
    assert len(parsed.key_id) == 12 and len(parsed.secret) == 43  # 43 base64url characters = 32 bytes
    assert apikeys.parse(token) == parsed
    assert apikeys.parse(f"  {token}\n") == parsed
    tokens = {apikeys.new_token()[0] for _ in range(200)}
    assert len(tokens) == 200


@pytest.mark.parametrize("bad", [
    "", "tdm_", "tdm__", "Bearer tdm_0123456789ab_" + "a" * 43, "tdk_0123456789ab_" + "a" * 43,
    "tdm_0123456789AB_" + "a" * 43, "tdm_0123456789a_" + "a" * 43, "tdm_0123456789ab_" + "a" * 42,
    "tdm_0123456789ab_" + "a" * 44, "tdm_0123456789ab_" + "a" * 42 + "!", None, 12345,
])
def test_malformed_tokens_parse_to_none(bad):
    assert apikeys.parse(bad) is None


def test_secrets_are_stored_as_sha256_and_compared_whole():
    _, parsed = apikeys.new_token()
    stored = apikeys.hash_secret(parsed.secret)
    assert stored == hashlib.sha256(parsed.secret.encode()).hexdigest() and parsed.secret not in stored
    assert apikeys.secret_matches(parsed.secret, stored)
    assert not apikeys.secret_matches(parsed.secret[:-1] + "x", stored)
    assert not apikeys.secret_matches(parsed.secret, "0" * 64)


def test_the_secret_stays_out_of_reprs():
    _, parsed = apikeys.new_token()
    assert parsed.secret not in repr(parsed) and parsed.key_id in repr(parsed)
