"""Registration, login and bearer tokens: the tokens webd issues verify with PyJWT (an independent
implementation); forged, tampered, expired and wrong-key tokens are refused with 401."""

import base64
import json
import re
import time

import jwt
import pytest

from webdtest import assert_error

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_register_created(webd, cluster):
    r = webd.request("POST", "/auth/register", body={"username": "alice", "password": "alice password"})
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"id", "username", "created_at"}
    assert body["username"] == "alice" and isinstance(body["id"], int) and body["id"] > 0
    assert RFC3339.match(body["created_at"]), body
    stored = cluster.sql("SELECT password_hash FROM users WHERE username = 'alice'")
    assert stored[0][0].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert "alice password" not in stored[0][0]


def test_register_conflict(webd):
    webd.register("bob")
    r = webd.request("POST", "/auth/register", body={"username": "bob", "password": "another password"})
    assert_error(r, 409, "conflict")


@pytest.mark.parametrize("body, fields", [
    ({"username": "ab", "password": "long enough"}, ["username"]),
    ({"username": "x" * 33, "password": "long enough"}, ["username"]),
    ({"username": "bad name", "password": "long enough"}, ["username"]),
    ({"username": "bad'name", "password": "long enough"}, ["username"]),
    ({"username": "carol", "password": "short"}, ["password"]),
    ({"username": "carol", "password": "p" * 129}, ["password"]),
    ({"username": "carol"}, ["password"]),
    ({}, ["username", "password"]),
    ({"username": 5, "password": True}, ["username", "password"]),
    ({"username": "carol", "password": "long enough", "admin": True}, ["admin"]),
])
def test_register_validation(webd, body, fields):
    r = webd.request("POST", "/auth/register", body=body)
    err = assert_error(r, 400, "validation_failed")
    assert sorted(err["fields"]) == sorted(fields), err


def test_register_bad_bodies(webd):
    assert_error(webd.request("POST", "/auth/register", raw=b"{not json",
                              headers={"Content-Type": "application/json"}), 400, "bad_request")
    assert_error(webd.request("POST", "/auth/register", body=["a", "list"]), 400, "bad_request")
    assert_error(webd.request("POST", "/auth/register", raw=b'{"username":"dave","password":"long enough"}',
                              headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")
    assert_error(webd.request("POST", "/auth/register", raw=b'{"username":"dave","password":"long enough"}'),
                 415, "unsupported_media_type")
    assert_error(webd.request("GET", "/auth/register"), 405, "method_not_allowed")
    r = webd.request("GET", "/auth/login")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["Allow"] == "POST"


def test_login_token_verifies_with_pyjwt(webd):
    info = webd.register("erin", "erin's password")
    before = int(time.time())
    r = webd.request("POST", "/auth/login", body={"username": "erin", "password": "erin's password"})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"token", "token_type", "expires_at", "expires_in"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert RFC3339.match(body["expires_at"])
    token = body["token"]
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, webd.key(), algorithms=["HS256"], issuer="webd",
                        options={"require": ["sub", "iat", "exp", "iss"]})
    assert claims["sub"] == str(info["id"]) and claims["name"] == "erin"
    assert before - 1 <= claims["iat"] <= int(time.time()) + 1
    assert claims["exp"] == claims["iat"] + 3600
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims["exp"])) == body["expires_at"]
    # And webd accepts it.
    assert webd.request("GET", "/tasks", token=token).status_code == 200


def test_login_failures_look_the_same(webd):
    webd.register("frank", "frank's password")
    attempts = [
        {"username": "frank", "password": "wrong password"},
        {"username": "nobody", "password": "frank's password"},
        {"username": "x", "password": "frank's password"},
        {"username": "frank", "password": "short"},
        {"username": "frank'; DROP TABLE users; --", "password": "frank's password"},
    ]
    messages = set()
    for body in attempts:
        r = webd.request("POST", "/auth/login", body=body)
        messages.add(assert_error(r, 401, "unauthorized")["message"])
    assert messages == {"invalid username or password"}
    err = assert_error(webd.request("POST", "/auth/login", body={"username": "frank"}), 400,
                       "validation_failed")
    assert set(err["fields"]) == {"password"}


def test_unknown_user_costs_a_hash(webd):
    """The dummy verification makes an unknown name take about as long as a wrong password."""
    webd.register("gina", "gina's password")

    def timed(name):
        t = time.monotonic()
        r = webd.request("POST", "/auth/login", body={"username": name, "password": "wrong password"})
        assert r.status_code == 401
        return time.monotonic() - t
    # Interleaved, and the fastest of each kind: a burst of load elsewhere on the machine slows both.
    known, unknown = [], []
    for _ in range(5):
        known.append(timed("gina"))
        unknown.append(timed("nobody-here"))
    assert min(unknown) > min(known) * 0.5, (known, unknown)


def forge(payload, key, alg="HS256", header=None):
    return jwt.encode(payload, key, algorithm=alg, headers=header)


@pytest.fixture(scope="module")
def account(webd):
    info = webd.register("harry", "harry's password")
    return info["id"], webd.login("harry", "harry's password")


def claims_for(uid, **over):
    now = int(time.time())
    c = {"sub": str(uid), "name": "harry", "iat": now, "exp": now + 600, "iss": "webd"}
    c.update(over)
    return c


def test_own_forgery_with_right_key_is_accepted(webd, account):
    """Sanity check for the forgery tests below: a token PyJWT signs with the real key works."""
    uid, _ = account
    token = forge(claims_for(uid), webd.key())
    assert webd.request("GET", "/tasks", token=token).status_code == 200


def tampered(token):
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = str(int(claims["sub"]) + 1)
    return ".".join([header, b64(json.dumps(claims).encode()), sig])


def alg_none(uid):
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims_for(uid)).encode())
    return f"{header}.{payload}."


@pytest.mark.parametrize("make", [
    pytest.param(lambda w, uid, tok: alg_none(uid), id="alg-none"),
    pytest.param(lambda w, uid, tok: alg_none(uid) + "c2ln", id="alg-none-with-signature"),
    pytest.param(lambda w, uid, tok: tampered(tok), id="tampered-payload"),
    pytest.param(lambda w, uid, tok: tok[:-2] + ("AA" if not tok.endswith("AA") else "BB"),
                 id="tampered-signature"),
    pytest.param(lambda w, uid, tok: forge(claims_for(uid), b"not the key, but 32 bytes long!!"),
                 id="wrong-key"),
    pytest.param(lambda w, uid, tok: forge(claims_for(uid, iat=int(time.time()) - 7200,
                                                        exp=int(time.time()) - 3600), w.key()),
                 id="expired"),
    pytest.param(lambda w, uid, tok: forge(claims_for(uid, exp=int(time.time())), w.key()),
                 id="expires-now"),
    pytest.param(lambda w, uid, tok: forge(claims_for(uid, iat=int(time.time()) + 3600,
                                                        exp=int(time.time()) + 7200), w.key()),
                 id="issued-in-future"),
    pytest.param(lambda w, uid, tok: forge(claims_for(uid, iss="someone-else"), w.key()), id="wrong-issuer"),
    pytest.param(lambda w, uid, tok: forge(claims_for(uid), w.key(), alg="HS512"), id="hs512"),
    pytest.param(lambda w, uid, tok: forge(claims_for(uid), w.key(), header={"typ": "JWS"}), id="bad-typ"),
    pytest.param(lambda w, uid, tok: forge(claims_for(uid, sub=uid), w.key()), id="numeric-sub"),
    pytest.param(lambda w, uid, tok: forge(claims_for(uid, sub="0"), w.key()), id="sub-zero"),
    pytest.param(lambda w, uid, tok: forge(claims_for(uid, sub="1 OR 1=1"), w.key()), id="sub-sql"),
    pytest.param(lambda w, uid, tok: "garbage", id="garbage"),
    pytest.param(lambda w, uid, tok: tok + "." + tok, id="too-many-parts"),
    pytest.param(lambda w, uid, tok: "", id="empty"),
])
def test_forged_tokens_refused(webd, account, make):
    uid, token = account
    bad = make(webd, uid, token)
    for method, path in (("GET", "/tasks"), ("GET", "/activity"), ("DELETE", "/tasks/1")):
        r = webd.request(method, path, headers={"Authorization": f"Bearer {bad}"})
        assert_error(r, 401, "unauthorized")


def test_authorization_header_forms(webd, account):
    _, token = account
    assert_error(webd.request("GET", "/tasks"), 401, "unauthorized")
    assert_error(webd.request("GET", "/tasks", headers={"Authorization": f"Basic {token}"}), 401,
                 "unauthorized")
    assert_error(webd.request("GET", "/tasks", headers={"Authorization": token}), 401, "unauthorized")
    assert webd.request("GET", "/tasks", headers={"Authorization": f"bearer  {token}"}).status_code == 200
    # Expired tokens say so.
    err = assert_error(webd.request("GET", "/tasks", token=forge(
        claims_for(account[0], iat=1, exp=2), webd.key())), 401, "unauthorized")
    assert "expired" in err["message"]


def test_tokens_and_passwords_never_logged(webd, account):
    _, token = account
    log = webd.log()
    assert token not in log
    assert token.split(".")[2] not in log
    assert "harry's password" not in log
