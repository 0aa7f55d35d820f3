"""Login throttling and the client address: failed logins per account and address get 429 with
Retry-After and growing delays before any password is hashed; the owner is not locked out by someone
else hammering the account; X-Forwarded-For names the client only when a trusted relay sends it; the
activity log has the real client and the name a failed login tried, never the password."""

import re
import subprocess
import time

import pytest

from webdtest import assert_error, wait_until

PASSWORD = "correct horse battery"


def login(w, name, password, client=None, rid=None):
    headers = {}
    if client:
        headers["X-Forwarded-For"] = client
    if rid:
        headers["X-Request-Id"] = rid
    return w.request("POST", "/auth/login", body={"username": name, "password": password}, headers=headers)


def assert_throttled(r):
    err = assert_error(r, 429, "too_many_attempts")
    wait = int(r.headers["Retry-After"])
    assert 1 <= wait <= 300, r.headers
    assert f"{wait} seconds" in err["message"]
    return wait


def test_wrong_passwords_throttled_with_growing_delays(new_webd):
    w = new_webd(extra={"login_failures": "3"})
    w.register("alice", PASSWORD)
    client = "203.0.113.10"
    for _ in range(3):
        assert_error(login(w, "alice", "wrong password", client), 401, "unauthorized")
    assert assert_throttled(login(w, "alice", "wrong password", client)) == 1
    # Even the right password waits: the attacker can't tell.
    assert assert_throttled(login(w, "alice", PASSWORD, client)) == 1
    time.sleep(1.1)
    assert_error(login(w, "alice", "wrong password", client), 401, "unauthorized")
    assert assert_throttled(login(w, "alice", "wrong password", client)) == 2
    time.sleep(2.1)
    # Case does not make another account.
    assert_error(login(w, "ALICE", "wrong password", client), 401, "unauthorized")
    assert assert_throttled(login(w, "Alice", "wrong password", client)) in (3, 4)
    # Elsewhere, alice is not held back.
    assert login(w, "alice", PASSWORD, "198.51.100.7").status_code == 200


def test_throttled_attempts_cost_no_hash(new_webd):
    w = new_webd(extra={"login_failures": "1"})
    w.register("bert", PASSWORD)
    client = "203.0.113.11"
    start = time.monotonic()
    for i in range(3):
        assert login(w, "bert", "wrong password", f"203.0.113.{120 + i}").status_code == 401
    hashed = (time.monotonic() - start) / 3
    assert_error(login(w, "bert", "wrong password", client), 401, "unauthorized")
    start = time.monotonic()
    for _ in range(20):
        assert_throttled(login(w, "bert", "wrong password", client))
    throttled = (time.monotonic() - start) / 20
    assert throttled < max(hashed / 2, 0.005), (throttled, hashed)


def test_success_clears_and_owner_not_locked_out(new_webd):
    w = new_webd(extra={"login_failures": "3", "login_account_failures": "10"})
    w.register("carol", PASSWORD)
    home = "198.51.100.20"
    assert login(w, "carol", PASSWORD, home).status_code == 200
    # Someone hammers carol from one address, then from many: bounded loops.
    for _ in range(30):
        login(w, "carol", "guess", "203.0.113.20")
    for i in range(12):
        login(w, "carol", "guess", f"203.0.113.{100 + i}")
    assert_throttled(login(w, "carol", "guess", "203.0.113.200"))
    # The owner, from where she logs in, is not held back; her failures there are her own.
    assert login(w, "carol", PASSWORD, home).status_code == 200
    assert_error(login(w, "carol", "typo", home), 401, "unauthorized")
    assert_error(login(w, "carol", "typo", home), 401, "unauthorized")
    assert login(w, "carol", PASSWORD, home).status_code == 200
    assert_error(login(w, "carol", "typo", home), 401, "unauthorized")
    assert_error(login(w, "carol", "typo", home), 401, "unauthorized")
    assert_error(login(w, "carol", "typo", home), 401, "unauthorized")
    assert_throttled(login(w, "carol", PASSWORD, home))


def test_one_address_many_accounts(new_webd):
    w = new_webd(extra={"login_address_failures": "4"})
    client = "203.0.113.30"
    for i in range(4):
        assert_error(login(w, f"user{i}", "wrong password", client), 401, "unauthorized")
    assert_throttled(login(w, "user9", "wrong password", client))
    # Names that can't exist count too.
    w2 = new_webd(extra={"login_address_failures": "2"})
    assert_error(login(w2, "x", "y", client), 401, "unauthorized")
    assert_error(login(w2, "x" * 1000, "y", client), 401, "unauthorized")
    assert_throttled(login(w2, "z", "y", client))
    assert_error(login(w2, "z", "y", "203.0.113.31"), 401, "unauthorized")


def test_forwarded_for_only_from_trusted_relays(new_webd):
    # No relay trusted: X-Forwarded-For is the client's own word and changing it does not escape.
    w = new_webd(extra={"trusted_proxies": "", "login_failures": "2"})
    w.register("dave", PASSWORD)
    for i in range(2):
        assert_error(login(w, "dave", "wrong password", f"203.0.113.{40 + i}"), 401, "unauthorized")
    assert_throttled(login(w, "dave", "wrong password", "203.0.113.99"))

    # Trusted (the default: loopback): the right-most entry that is not a relay is the client.
    w = new_webd(extra={"login_failures": "2"})
    w.register("erin", PASSWORD)
    for _ in range(2):
        assert_error(login(w, "erin", "wrong password", "6.6.6.6, 203.0.113.50, 127.0.0.3"), 401,
                     "unauthorized")
    assert_throttled(login(w, "erin", "wrong password", "203.0.113.50"))
    assert login(w, "erin", PASSWORD, "6.6.6.6, 203.0.113.51").status_code == 200


def test_activity_has_client_and_tried_name(new_webd, cluster):
    w = new_webd()
    w.register("fay", PASSWORD)
    secret = "Sup3r-Secret-Guess"
    login(w, "FAY", secret, "203.0.113.60", rid="fay-fail-1")
    login(w, "mallory\x7f\u00e9" + "m" * 100, secret, "203.0.113.61", rid="fay-fail-2")
    assert login(w, "Fay", PASSWORD, "2001:db8::61", rid="fay-ok-1").status_code == 200

    def rows():
        got = cluster.sql("SELECT request_id, status, client FROM activity "
                          "WHERE request_id LIKE 'fay-%' ORDER BY request_id")
        return got if len(got) == 3 else None
    got = wait_until(rows, 10, "the activity rows")
    assert got == [["fay-fail-1", "401", "203.0.113.60"], ["fay-fail-2", "401", "203.0.113.61"],
                   ["fay-ok-1", "200", "2001:db8::61"]]
    log = w.log()
    assert re.search(r"POST /auth/login 401 \S+ user=- client=203\.0\.113\.60 request_id=fay-fail-1 name=FAY$",
                     log, re.M), log[-2000:]
    line = [ln for ln in log.splitlines() if "request_id=fay-fail-2" in ln][0]
    assert line.endswith(" name=mallory???" + "m" * (63 - 10)), line
    assert re.search(r"POST /auth/login 200 \S+ user=\d+ client=2001:db8::61 request_id=fay-ok-1 name=fay$",
                     log, re.M), log[-2000:]
    assert secret not in log


@pytest.mark.parametrize("value, reason", [("198.51.100.1/24", "not a network"), ("relay", "not a network"),
                                           ("198.51.100.0/24,,::1", "empty entry")])
def test_bad_trusted_proxies_refused(new_webd, value, reason):
    w = new_webd(extra={"trusted_proxies": value}, start=False)
    out = subprocess.run([str(w.binary), "--config", str(w.config), "--check-config"], capture_output=True,
                         text=True, env=w.env, timeout=30)
    assert out.returncode == 78, out
    assert re.search(r"webd\.conf:\d+: \[webd\] key 'trusted_proxies': .*" + reason, out.stderr), out.stderr


def test_wrong_old_passwords_throttled(new_webd):
    """A password change checks the old password as a login does, so guessing it is held back the same way,
    before any hash, and the failures count toward the account's logins from that address."""
    w = new_webd(extra={"login_failures": "3"})
    w.register("dora", PASSWORD)
    client = "203.0.113.30"
    r = login(w, "dora", PASSWORD, client)
    assert r.status_code == 200, r.text
    token = r.json()["token"]

    def change(old):
        return w.request("PUT", "/auth/password", token=token, headers={"X-Forwarded-For": client},
                         body={"old_password": old, "new_password": "a brand new password"})

    for _ in range(3):
        assert_error(change("not the old one"), 403, "forbidden")
    assert assert_throttled(change("not the old one")) == 1
    # The right old password waits too, and so does a login of the account from that address.
    assert_throttled(change(PASSWORD))
    assert_throttled(login(w, "dora", PASSWORD, client))
    time.sleep(1.1)
    r = change(PASSWORD)
    assert r.status_code == 200, r.text
