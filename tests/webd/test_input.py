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


# Item by item, the input rules a user expects.

def test_usernames_unique_without_regard_to_case(webd, cluster):
    webd.register("Olivia")
    for name in ("olivia", "OLIVIA", "oLiViA"):
        r = webd.request("POST", "/auth/register", body={"username": name, "password": "another password"})
        assert_error(r, 409, "conflict")
    assert cluster.sql("SELECT username FROM users WHERE lower(username) = 'olivia'") == [["Olivia"]]
    # Login matches the stored name whatever the case; the token carries it as stored.
    for name in ("olivia", "OLIVIA", "Olivia"):
        token = webd.login(name)
        assert jwt.decode(token, options={"verify_signature": False})["name"] == "Olivia"
        assert webd.request("GET", "/tasks", token=token).status_code == 200


@pytest.mark.parametrize("title", [" ", "     ", "\t\n ", "\u00a0", "\u3000\u2003", "\u200b", "\ufeff "])
def test_blank_titles_refused(webd, title):
    _, tok = webd.user(f"blank{abs(hash(title)) % 100000}")
    err = assert_error(webd.request("POST", "/tasks", token=tok, body={"title": title}), 400,
                       "validation_failed")
    assert err["fields"] == {"title": "must not be blank"}
    tid = webd.request("POST", "/tasks", token=tok, body={"title": " x "}).json()["id"]
    for method in ("PUT", "PATCH"):
        err = assert_error(webd.request(method, f"/tasks/{tid}", token=tok, body={"title": title}), 400,
                           "validation_failed")
        assert err["fields"] == {"title": "must not be blank"}
    assert webd.request("GET", f"/tasks/{tid}", token=tok).json()["title"] == " x "


@pytest.mark.parametrize("path, field, message", [
    ("/tasks?foo=1", "foo", "unknown parameter"),
    ("/tasks?limit=1&limit=2", "limit", "given more than once"),
    ("/tasks?done=true&done=false", "done", "given more than once"),
    ("/tasks?limit=5&Limit=5", "Limit", "unknown parameter"),
    ("/tasks/?offset=0&offset=0", "offset", "given more than once"),
    ("/activity?done=true", "done", "unknown parameter"),
    ("/activity?limit=1&limit=1", "limit", "given more than once"),
    ("/tasks/1?limit=1", "limit", "unknown parameter"),
])
def test_query_parameters(webd, path, field, message):
    _, tok = webd.user(f"q{abs(hash(path)) % 100000}")
    err = assert_error(webd.request("GET", path, token=tok), 400, "validation_failed")
    assert err["fields"] == {field: message}


def test_query_parameters_elsewhere(webd):
    _, tok = webd.user("quentin")
    for method, path in (("POST", "/tasks?title=x"), ("GET", "/healthcheck?verbose=1"),
                         ("POST", "/auth/login?username=x")):
        r = webd.request(method, path, token=tok, body={"title": "t"})
        assert r.status_code == 400, (path, r.text)
    assert_error(webd.request("GET", "/tasks?limit", token=tok), 400, "bad_request")
    # Many parameters: one answer, bounded.
    r = webd.request("GET", "/tasks?" + "&".join(f"p{i}=1" for i in range(1000)), token=tok)
    err = assert_error(r, 400, "validation_failed")
    assert len(err["fields"]) == 10 and err["unlisted"] == 990
    assert webd.request("GET", "/tasks?", token=tok).status_code == 200
    assert webd.request("GET", "/tasks?limit=2&offset=0&done=false", token=tok).status_code == 200


def test_trailing_slash_everywhere(webd):
    webd.register("tess")
    r = webd.request("POST", "/auth/login/", body={"username": "tess", "password": "correct horse battery"})
    assert r.status_code == 200, r.text
    tok = r.json()["token"]
    r = webd.request("POST", "/tasks/", token=tok, body={"title": "slash"})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    assert webd.request("GET", "/tasks/", token=tok).json() == webd.request("GET", "/tasks", token=tok).json()
    assert webd.request("GET", f"/tasks/{tid}/", token=tok).json()["id"] == tid
    assert webd.request("PATCH", f"/tasks/{tid}/", token=tok, body={"done": True}).json()["done"] is True
    assert webd.request("GET", "/activity/", token=tok).status_code == 200
    assert webd.request("GET", "/healthcheck/").status_code == 200
    assert webd.request("DELETE", f"/tasks/{tid}/", token=tok).status_code == 204
    r = webd.request("POST", "/auth/register/", body={"username": "tess2", "password": "correct horse battery"})
    assert r.status_code == 201


def test_token_issued_in_the_future(webd):
    uid = webd.register("ursula")["id"]
    now = int(time.time())
    token = jwt.encode({"sub": str(uid), "name": "ursula", "iat": now + 3600, "exp": now + 7200,
                        "iss": "webd"}, webd.key(), algorithm="HS256")
    err = assert_error(webd.request("GET", "/tasks", token=token), 401, "unauthorized")
    assert "issued in the future" in err["message"] and "expired" not in err["message"]
    # Within the minute of skew: fine.
    token = jwt.encode({"sub": str(uid), "name": "ursula", "iat": now + 30, "exp": now + 600,
                        "iss": "webd"}, webd.key(), algorithm="HS256")
    assert webd.request("GET", "/tasks", token=token).status_code == 200
