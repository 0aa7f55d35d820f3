"""Hostile and unusual input: JSON bodies whose cost must stay linear in their size with a bounded error
list, the JSON rules of RFC 8259 (raw control characters, repeated keys, nesting), and the input rules a
user expects (case-insensitive usernames, blank titles, query parameters, trailing slashes, tokens issued
in the future)."""

import time

import jwt
import pytest

from webdtest import assert_error

JSON = {"Content-Type": "application/json"}


def unknown_keys(size, count):
    """An object of <count> distinct unknown keys, padded to about <size> bytes."""
    pad = max(0, (size - 2) // count - len('"k00000":0,'))
    body = "{" + ",".join(f'"k{i:05d}{"-" * pad}":0' for i in range(count)) + "}"
    return body.encode()


def same_size_known(size):
    """Known fields of the same size: refused with 400 before any password hash (username not a string)."""
    head = b'{"username":1,"password":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def best_time(webd, body, rounds=3):
    times = []
    for _ in range(rounds):
        t = time.monotonic()
        r = webd.request("POST", "/auth/login", raw=body, headers=JSON, timeout=120)
        times.append(time.monotonic() - t)
    return min(times), r


def test_unknown_keys_bounded_answer(webd):
    body = unknown_keys(64 * 1024, 5000)
    r = webd.request("POST", "/auth/login", raw=body, headers=JSON)
    err = assert_error(r, 400, "validation_failed")
    # 5,000 unknown keys and the two required ones missing: ten listed, the rest counted.
    assert len(err["fields"]) == 10, err
    assert err["unlisted"] == 5000 + 2 - 10
    assert "5002" in err["message"]
    assert len(r.content) < 2048, len(r.content)


def test_unknown_keys_cost_linear(new_webd):
    """Nearly JSON_VALUES_MAX distinct keys in 2 MB cost about what 2 MB of known fields cost."""
    w = new_webd(extra={"max_body_size": "2M"})
    size = 2 * 1024 * 1024
    hostile_time, r = best_time(w, unknown_keys(size, 9990))
    assert_error(r, 400, "validation_failed")
    assert len(r.content) < 2048
    plain_time, r = best_time(w, same_size_known(size))
    assert_error(r, 400, "validation_failed")
    # Quadratic validation took over a second here; linear takes a few milliseconds more than the
    # reference. Generous for a loaded machine.
    assert hostile_time < plain_time * 3 + 0.3, (hostile_time, plain_time)


@pytest.mark.parametrize("raw, words", [
    (b'{"username":"a\tb","password":"xxxxxxxxx"}', "control character"),
    (b'{"username":"ab\ncd","password":"xxxxxxxxx"}', "control character"),
    (b'{"username":"alice","password":"x\x01xxxxxxxx"}', "control character"),
    (b'{"username":"alice","username":"bob","password":"xxxxxxxxx"}', "more than once"),
    (b'{"username":"alice","password":"xxxxxxxxx","x":{"a":1,"a":2}}', "more than once"),
    (b'{"username":"alice","password":"xxxxxxxxx","x":' + b"[" * 40 + b"]" * 40 + b"}", "deep"),
    (b"[" + b"0," * 10000 + b"0]", "values"),
], ids=["tab", "newline", "ctrl-a", "repeated", "repeated-nested", "deep", "values"])
def test_json_rules(webd, raw, words):
    for path in ("/auth/login", "/auth/register"):
        err = assert_error(webd.request("POST", path, raw=raw, headers=JSON), 400, "bad_request")
        assert words in err["message"], err


def test_escaped_control_characters_are_fine(webd):
    _, tok = webd.user("escaper")
    r = webd.request("POST", "/tasks", token=tok, raw=b'{"title":"a\\tb\\nc","description":"\\u0001"}',
                     headers=JSON)
    assert r.status_code == 201, r.text
    assert r.json()["title"] == "a\tb\nc"
