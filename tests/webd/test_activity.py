"""The activity log: one row per request in the activity table and one journal line, and
GET /activity showing the caller's own entries, newest first, paginated."""

import re
import time

from webdtest import assert_error, wait_until

ITEM_KEYS = {"id", "at", "method", "path", "status", "latency_ms", "request_id", "client"}


def activity(webd, token, query=""):
    r = webd.request("GET", "/activity" + query, token=token)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    return r.json()


def wait_for_request_id(webd, token, rid):
    """Rows are written in batches shortly after the answer: poll, bounded."""
    def found():
        items = activity(webd, token, "?limit=100")["items"]
        return next((i for i in items if i["request_id"] == rid), None)
    return wait_until(found, 10, f"activity entry {rid}", interval=0.1)


def test_entries_for_the_caller(webd, cluster):
    uid, token = webd.user("ivy")
    _, other = webd.user("jack")
    r = webd.request("POST", "/tasks", token=token, body={"title": "logged"},
                     headers={"X-Request-Id": "ivy-create-1"})
    assert r.status_code == 201
    tid = r.json()["id"]
    webd.request("GET", f"/Tarefa/{tid}/", token=token, headers={"X-Request-Id": "ivy-get-2"})
    webd.request("GET", "/tasks/999999", token=token, headers={"X-Request-Id": "ivy-miss-3"})
    webd.request("GET", "/tasks", token=other, headers={"X-Request-Id": "jack-list-1"})

    entry = wait_for_request_id(webd, token, "ivy-miss-3")
    assert set(entry) == ITEM_KEYS
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/tasks/999999", 404)
    assert entry["client"] == "127.0.0.1"
    assert isinstance(entry["latency_ms"], (int, float)) and 0 <= entry["latency_ms"] < 10000
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", entry["at"])

    items = activity(webd, token, "?limit=100")["items"]
    rids = [i["request_id"] for i in items]
    assert rids.index("ivy-miss-3") < rids.index("ivy-get-2") < rids.index("ivy-create-1")
    assert [i["id"] for i in items] == sorted((i["id"] for i in items), reverse=True)
    create = items[rids.index("ivy-create-1")]
    assert (create["method"], create["path"], create["status"]) == ("POST", "/tasks", 201)
    get = items[rids.index("ivy-get-2")]
    assert (get["path"], get["status"]) == (f"/Tarefa/{tid}/", 200)
    # The login is the user's too; the other user's requests are not.
    assert "jack-list-1" not in rids
    assert any(i["path"] == "/auth/login" and i["status"] == 200 for i in items)
    wait_for_request_id(webd, other, "jack-list-1")

    rows = cluster.sql("SELECT method, path, status, client FROM activity WHERE request_id = 'ivy-create-1' "
                       "AND user_id = :'v1'", uid)
    assert rows == [["POST", "/tasks", "201", "127.0.0.1"]]
    # And the journal line.
    assert re.search(r"POST /tasks 201 [0-9.]+ms user=%d client=127\.0\.0\.1 request_id=ivy-create-1" % uid,
                     webd.log())


def test_anonymous_and_failed_requests_logged(webd, cluster):
    webd.request("GET", "/no/such/route", headers={"X-Request-Id": "anon-404"})
    webd.request("GET", "/tasks", headers={"X-Request-Id": "anon-401"})

    def logged():
        return cluster.sql("SELECT count(*) FROM activity WHERE request_id IN ('anon-404', 'anon-401') "
                           "AND user_id IS NULL") == [["2"]]
    wait_until(logged, 10, "anonymous entries in the table", interval=0.1)
    assert "GET /no/such/route 404" in webd.log()


def test_pagination(webd):
    _, token = webd.user("kim")
    for i in range(6):
        webd.request("GET", "/tasks", token=token, headers={"X-Request-Id": f"kim-{i}"})
    wait_for_request_id(webd, token, "kim-5")
    first = activity(webd, token, "?limit=3")
    assert (first["limit"], first["offset"]) == (3, 0) and len(first["items"]) == 3
    assert first["next_offset"] == 3
    second = activity(webd, token, "?limit=3&offset=3")
    assert {i["id"] for i in first["items"]}.isdisjoint(i["id"] for i in second["items"])
    assert max(i["id"] for i in second["items"]) < min(i["id"] for i in first["items"])
    everything = activity(webd, token, "?limit=100")
    assert everything["next_offset"] is None
    for q in ("?limit=0", "?limit=101", "?offset=-1", "?limit=x"):
        assert_error(webd.request("GET", "/activity" + q, token=token), 400, "validation_failed")
    assert_error(webd.request("GET", "/activity"), 401, "unauthorized")
    assert_error(webd.request("POST", "/activity", token=token, body={}), 405, "method_not_allowed")


def test_odd_paths_logged_safely(webd, cluster):
    """A path that matches no route is logged as received (no user: it never got to the token)."""
    _, token = webd.user("lou")
    path = "/tasks/%27%22%3B--%5C/x'y"
    webd.request("GET", path, token=token, headers={"X-Request-Id": "lou-odd"})

    def row():
        return cluster.sql("SELECT path, status, user_id FROM activity WHERE request_id = 'lou-odd'")
    assert wait_until(row, 10, "the entry of lou-odd", interval=0.1) == [[path, "404", ""]]


def test_activity_off(new_webd, cluster):
    w = new_webd(extra={"activity": "off"})
    _, token = w.user("quiet")
    w.request("GET", "/tasks", token=token, headers={"X-Request-Id": "quiet-1"})
    time.sleep(0.5)
    assert activity(w, token)["items"] == []
    assert "request_id=quiet-1" not in w.log()
