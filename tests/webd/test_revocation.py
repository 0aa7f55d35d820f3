"""Tokens stop working when their user is deleted or revokes them: every authenticated route answers the
same 401, whatever the method; POST /auth/revoke logs a user out everywhere and PUT /auth/password changes
the password, revoking every older token and answering with a new one."""

import time

import jwt

from webdtest import assert_error

PASSWORD = "correct horse battery"


def routes(tid):
    """Every authenticated route and method, with a body where it takes one."""
    body = {"title": "t"}
    return [
        ("GET", "/tasks", None), ("POST", "/tasks", body),
        ("GET", f"/tasks/{tid}", None), ("PUT", f"/tasks/{tid}", body), ("PATCH", f"/tasks/{tid}", body),
        ("DELETE", f"/tasks/{tid}", None),
        ("GET", "/Tarefa/", None), ("POST", "/Tarefa", body), ("GET", f"/Tarefa/{tid}/", None),
        ("PUT", f"/Tarefa/{tid}", body), ("PATCH", f"/Tarefa/{tid}/", body), ("DELETE", f"/Tarefa/{tid}", None),
        ("GET", "/activity", None), ("HEAD", "/tasks", None),
        ("POST", "/auth/revoke", None),
        ("PUT", "/auth/password", {"old_password": PASSWORD, "new_password": "another password"}),
    ]


def assert_refused_everywhere(webd, token, tid):
    """Every route answers 401 with one message; returns it."""
    messages = set()
    for method, path, body in routes(tid):
        r = webd.request(method, path, token=token, body=body)
        if method == "HEAD":
            assert r.status_code == 401, (method, path, r.status_code)
            continue
        messages.add(assert_error(r, 401, "unauthorized")["message"])
    assert len(messages) == 1, messages
    return messages.pop()


def make_task(webd, token, title="mine"):
    r = webd.request("POST", "/tasks", token=token, body={"title": title})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_deleted_users_token_refused_on_every_route(webd, cluster):
    uid, token = webd.user("doomed")
    tid = make_task(webd, token)
    # Used first, so that the token is in webd's cache of verified tokens.
    assert webd.request("GET", "/tasks", token=token).status_code == 200
    assert webd.request("GET", "/activity", token=token).status_code == 200
    cluster.sql("DELETE FROM users WHERE id = :'v1'", uid)
    message = assert_refused_everywhere(webd, token, tid)
    assert "log in again" in message
    # Nothing was written for the deleted user.
    assert cluster.sql("SELECT count(*) FROM tasks WHERE user_id = :'v1'", uid) == [["0"]]


def test_revoke_logs_out_everywhere(webd, cluster):
    uid, first = webd.user("leaver")
    second = webd.login("leaver")
    tid = make_task(webd, first)
    for token in (first, second):
        assert webd.request("GET", f"/tasks/{tid}", token=token).status_code == 200

    r = webd.request("POST", "/auth/revoke", token=second)
    assert r.status_code == 204, r.text
    assert r.content == b""
    revoked = assert_refused_everywhere(webd, first, tid)
    assert assert_refused_everywhere(webd, second, tid) == revoked
    # The same answer as for a deleted user's token.
    gone_uid, gone = webd.user("gone-too")
    cluster.sql("DELETE FROM users WHERE id = :'v1'", gone_uid)
    assert assert_error(webd.request("GET", "/tasks", token=gone), 401, "unauthorized")["message"] == revoked

    # Logging in again works, and the task is still there.
    fresh = webd.login("leaver")
    assert webd.request("GET", f"/tasks/{tid}", token=fresh).status_code == 200
    claims = jwt.decode(fresh, webd.key(), algorithms=["HS256"], issuer="webd")
    assert claims["gen"] == 1
    assert cluster.sql("SELECT token_generation FROM users WHERE id = :'v1'", uid) == [["1"]]
    # Revoking needs a token, and no body.
    assert_error(webd.request("POST", "/auth/revoke"), 401, "unauthorized")
    assert_error(webd.request("GET", "/auth/revoke", token=fresh), 405, "method_not_allowed")


def test_tokens_without_generation_revoked_too(webd):
    """Tokens signed before generations existed carry none: generation 0, refused once revoked."""
    uid, token = webd.user("oldtimer")
    now = int(time.time())
    legacy = jwt.encode({"sub": str(uid), "name": "oldtimer", "iat": now, "exp": now + 600, "iss": "webd"},
                        webd.key(), algorithm="HS256")
    assert webd.request("GET", "/tasks", token=legacy).status_code == 200
    assert webd.request("POST", "/auth/revoke", token=token).status_code == 204
    assert_error(webd.request("GET", "/tasks", token=legacy), 401, "unauthorized")
    # A token that claims a later generation than the user's is refused as well.
    ahead = jwt.encode({"sub": str(uid), "name": "oldtimer", "iat": now, "exp": now + 600, "iss": "webd",
                        "gen": 5}, webd.key(), algorithm="HS256")
    assert_error(webd.request("GET", "/tasks", token=ahead), 401, "unauthorized")


def test_password_change(webd, cluster):
    uid, token = webd.user("changer")
    other = webd.login("changer")
    tid = make_task(webd, token)

    err = assert_error(webd.request("PUT", "/auth/password", token=token,
                                    body={"old_password": "wrong password", "new_password": "new password 1"}),
                       403, "forbidden")
    assert "old password" in err["message"]
    assert_error(webd.request("PUT", "/auth/password", token=token,
                              body={"old_password": "short", "new_password": "new password 1"}), 403, "forbidden")
    err = assert_error(webd.request("PUT", "/auth/password", token=token,
                                    body={"old_password": PASSWORD, "new_password": "short"}),
                       400, "validation_failed")
    assert set(err["fields"]) == {"new_password"}
    err = assert_error(webd.request("PUT", "/auth/password", token=token, body={"password": PASSWORD}),
                       400, "validation_failed")
    assert set(err["fields"]) == {"old_password", "new_password", "password"}
    # None of that changed anything.
    assert webd.request("GET", "/tasks", token=other).status_code == 200

    r = webd.request("PUT", "/auth/password", token=token,
                     body={"old_password": PASSWORD, "new_password": "new password 1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"token", "token_type", "expires_at", "expires_in"}
    fresh = body["token"]
    # Every older token is revoked, the new one works.
    assert_refused_everywhere(webd, token, tid)
    assert_error(webd.request("GET", "/tasks", token=other), 401, "unauthorized")
    assert webd.request("GET", f"/tasks/{tid}", token=fresh).status_code == 200
    # The old password no longer logs in; the new one does.
    assert_error(webd.request("POST", "/auth/login", body={"username": "changer", "password": PASSWORD}),
                 401, "unauthorized")
    webd.login("changer", "new password 1")
    assert "new password 1" not in webd.log() and PASSWORD not in webd.log()


def bad_requests(tid):
    """Requests to authenticated routes that are wrong on their own: (method, path, body, headers, status)."""
    json_type = {"Content-Type": "application/json"}
    return [
        ("POST", "/tasks", {"title": ""}, None, 400),
        ("POST", "/tasks", {"title": "t", "extra": 1}, None, 400),
        ("POST", "/tasks", None, {"Content-Type": "text/plain"}, 415),
        ("POST", "/tasks", b"{not json", json_type, 400),
        ("PUT", f"/tasks/{tid}", {"done": "yes"}, None, 400),
        ("PATCH", f"/Tarefa/{tid}/", {}, None, 400),
        ("GET", "/tasks?limit=0", None, None, 400),
        ("GET", "/activity?offset=-1", None, None, 400),
        ("PUT", "/auth/password", {"old_password": PASSWORD}, None, 400),
    ]


def send_bad(webd, token, method, path, body, headers):
    if isinstance(body, bytes):
        return webd.request(method, path, token=token, raw=body, headers=headers)
    return webd.request(method, path, token=token, body=body, headers=headers)


def test_revoked_token_refused_before_the_request_is_judged(webd, cluster):
    """A revoked token or a deleted user's gets the same 401 even when the request is wrong otherwise; a good
    token gets the request's own 400 or 415."""
    uid, token = webd.user("sloppy")
    tid = make_task(webd, token)
    for method, path, body, headers, status in bad_requests(tid):
        r = send_bad(webd, token, method, path, body, headers)
        assert r.status_code == status, (method, path, r.status_code, r.text)

    stale = webd.login("sloppy")
    assert webd.request("POST", "/auth/revoke", token=token).status_code == 204
    messages = set()
    for method, path, body, headers, _ in bad_requests(tid):
        r = send_bad(webd, stale, method, path, body, headers)
        messages.add(assert_error(r, 401, "unauthorized")["message"])
    gone_uid, gone = webd.user("sloppy-gone")
    cluster.sql("DELETE FROM users WHERE id = :'v1'", gone_uid)
    for method, path, body, headers, _ in bad_requests(tid):
        r = send_bad(webd, gone, method, path, body, headers)
        messages.add(assert_error(r, 401, "unauthorized")["message"])
    assert len(messages) == 1, messages
