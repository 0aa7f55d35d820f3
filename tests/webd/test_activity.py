"""The activity log: one row per request in the activity table and one journal line, and
GET /activity showing the caller's own entries, newest first, paginated."""

import re
import threading
import time

import requests

from webdtest import Load, assert_error, wait_until

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


def test_read_right_after_requests_sees_them(webd):
    """Rows are written in batches, but a read of one's activity right after one's requests sees them
    all (it waits for the caller's queued entries), round after round, with no polling."""
    _, token = webd.user("rory")
    for n in range(12):
        for i in range(3):
            r = webd.request("GET", "/tasks", token=token, headers={"X-Request-Id": f"rory-{n}-{i}"})
            assert r.status_code == 200
        started = time.monotonic()
        rids = [i["request_id"] for i in activity(webd, token, "?limit=5")["items"]]
        assert rids[:3] == [f"rory-{n}-2", f"rory-{n}-1", f"rory-{n}-0"], (n, rids)
        assert time.monotonic() - started < 1.5  # the wait is bounded at a second; a flush is much less


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
    first = activity(webd, token, "?limit=3")
    assert (first["limit"], first["offset"]) == (3, 0) and len(first["items"]) == 3
    assert first["next_offset"] == 3 and first["next_before"] == first["items"][-1]["id"]
    # Each read is an entry too, so the next page by offset would shift by one; by "before" it does not.
    second = activity(webd, token, "?limit=3&before=%d" % first["next_before"])
    assert [i["request_id"] for i in first["items"] + second["items"]][:6] == [f"kim-{i}" for i in range(5, -1, -1)]
    assert max(i["id"] for i in second["items"]) < min(i["id"] for i in first["items"])
    by_offset = activity(webd, token, "?limit=3&offset=3")
    assert by_offset["offset"] == 3 and len(by_offset["items"]) == 3
    # Two reads since the first page: the offset page starts two entries later than the cursor's.
    assert [i["request_id"] for i in by_offset["items"]][:1] == [f"kim-{4}"]
    everything = activity(webd, token, "?limit=100")
    assert everything["next_offset"] is None and everything["next_before"] is None
    assert activity(webd, token, "?before=1")["items"] == []
    for q in ("?limit=0", "?limit=101", "?offset=-1", "?limit=x", "?before=0", "?before=-3", "?before=x",
              "?before=99999999999999999999"):
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


def metric(webd, name):
    return webd.metrics().get(name, 0)


def logged_ids(cluster, prefix):
    """{request_id: count} of the rows whose request id starts with prefix."""
    rows = cluster.sql("SELECT request_id, count(*) FROM activity WHERE request_id LIKE :'v1' || '%' "
                       "GROUP BY request_id", prefix)
    return {rid: int(n) for rid, n in rows}


def test_deleted_users_rows_do_not_cost_the_others(webd, cluster):
    """A deleted user's requests, anonymous login attempts and a live user's, interleaved: every one is
    logged, and the deleted user's rows keep the id and name the token carried."""
    alice_id, alice = webd.user("audit-alice")
    gone_id, gone = webd.user("audit-gone")
    webd.request("GET", "/tasks", token=gone)
    cluster.sql("DELETE FROM users WHERE id = :'v1'", gone_id)
    sent = []
    for i in range(30):
        for who, token, method, path, body in (
                ("alice", alice, "GET", "/tasks", None),
                ("gone", gone, "GET", "/activity", None),
                ("anon", None, "POST", "/auth/login", {"username": "nobody", "password": "not the password"})):
            rid = f"mix-{who}-{i}"
            webd.request(method, path, token=token, body=body, headers={"X-Request-Id": rid})
            sent.append(rid)
    wait_until(lambda: len(logged_ids(cluster, "mix-")) == len(sent), 15, "every entry in the table", interval=0.2)
    assert logged_ids(cluster, "mix-") == {rid: 1 for rid in sent}
    rows = cluster.sql("SELECT DISTINCT user_id, username, status FROM activity WHERE request_id LIKE 'mix-gone-%'")
    assert rows == [[str(gone_id), "audit-gone", "401"]]
    rows = cluster.sql("SELECT DISTINCT user_id, username FROM activity WHERE request_id LIKE 'mix-alice-%'")
    assert rows == [[str(alice_id), "audit-alice"]]
    # A failed login is anonymous and keeps the name it tried.
    assert cluster.sql("SELECT DISTINCT user_id, username FROM activity WHERE request_id LIKE 'mix-anon-%'") == [["", "nobody"]]


def test_a_refused_row_costs_only_itself(webd, cluster):
    """Whatever makes the database refuse one row of a batch (here a constraint the test adds), the other
    rows of the batch are written, and the refused one is counted."""
    cluster.admin_sql("ALTER TABLE activity ADD CONSTRAINT test_poison CHECK (request_id <> 'poison')", db="webd")
    try:
        before = metric(webd, 'webd_activity_dropped_total{reason="refused"}')
        sent = []
        for i in range(40):
            rid = "poison" if i == 17 else f"batch-{i}"
            webd.request("GET", "/no/such/route", headers={"X-Request-Id": rid})
            if rid != "poison":
                sent.append(rid)
        wait_until(lambda: len(logged_ids(cluster, "batch-")) == len(sent), 15, "the good rows", interval=0.2)
        assert logged_ids(cluster, "batch-") == {rid: 1 for rid in sent}
        assert logged_ids(cluster, "poison") == {}
        wait_until(lambda: metric(webd, 'webd_activity_dropped_total{reason="refused"}') == before + 1, 10,
                   "the refused row to be counted")
        assert "refused the entry of request poison" in webd.log()
    finally:
        cluster.admin_sql("ALTER TABLE activity DROP CONSTRAINT test_poison", db="webd")


def test_nothing_lost_across_restart_and_broken_connections(webd, cluster):
    """A live user, a deleted user and anonymous clients while PostgreSQL restarts and webd's connections are
    killed: every request is in the table exactly once, or counted as dropped."""
    _, live = webd.user("steady")
    gone_id, gone = webd.user("vanished")
    cluster.sql("DELETE FROM users WHERE id = :'v1'", gone_id)
    dropped_before = (metric(webd, 'webd_activity_dropped_total{reason="queue_full"}') +
                      metric(webd, 'webd_activity_dropped_total{reason="refused"}'))
    sent = []
    lock = threading.Lock()
    counter = iter(range(10**9))

    def one(i):
        with lock:
            n = next(counter)
        if n >= 1500:
            time.sleep(0.05)
            return
        kind = n % 3
        rid = f"storm-{n}"
        token = (live, gone, None)[kind]
        try:
            if kind == 2:
                webd.request("POST", "/auth/login", body={"username": "nobody", "password": "not it at all"},
                             headers={"X-Request-Id": rid}, timeout=15)
            else:
                webd.request("GET", "/tasks", token=token, headers={"X-Request-Id": rid}, timeout=15)
        except requests.RequestException as e:
            raise AssertionError(f"webd dropped a request: {e!r}")
        with lock:
            sent.append(rid)

    load = Load(6, one, max_seconds=40).start()
    try:
        time.sleep(1.0)
        cluster.restart()
        time.sleep(1.0)
        for _ in range(3):
            cluster.admin_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = 'webd'")
            time.sleep(0.5)
        wait_until(lambda: len(sent) >= 1500, 40, "the requests to be sent", interval=0.2)
    finally:
        errors = load.stop()
    assert not errors, errors[:3]

    def settled():
        return metric(webd, "webd_activity_queued") == 0 and len(logged_ids(cluster, "storm-")) > 0
    wait_until(settled, 20, "the queue to empty", interval=0.2)
    logged = logged_ids(cluster, "storm-")
    dropped = (metric(webd, 'webd_activity_dropped_total{reason="queue_full"}') +
               metric(webd, 'webd_activity_dropped_total{reason="refused"}')) - dropped_before
    twice = {rid: n for rid, n in logged.items() if n > 1}
    assert not twice, f"{len(twice)} entries written twice, e.g. {list(twice)[:5]}"
    missing = set(sent) - set(logged)
    assert len(missing) == dropped, f"{len(missing)} entries missing, {dropped} counted as dropped"
    assert dropped == 0, dropped
    print(f"sent {len(sent)}, batches sent again: {metric(webd, 'webd_activity_retries_total')}")


def test_rows_written_with_copy_hold_what_was_asked(webd, cluster):
    """Batches go as a binary COPY on a connection of their own: each field arrives as the request had it
    (the time to the microsecond, NULL user for anonymous requests, the user's id and name, three decimals of
    latency); and when that connection is killed, the rows go by INSERT until it is back: none lost or
    written twice."""
    uid, token = webd.user("zoe.copy_1-x")
    copied = metric(webd, "webd_activity_copied_total")
    started = time.time()
    for i in range(20):
        webd.request("GET", "/tasks", token=token, headers={"X-Request-Id": f"copy-user-{i}"})
        webd.request("GET", "/no/such/route", headers={"X-Request-Id": f"copy-anon-{i}"})
    wait_until(lambda: len(logged_ids(cluster, "copy-")) == 40, 10, "the 40 rows", interval=0.1)
    ended = time.time()
    assert metric(webd, "webd_activity_copied_total") >= copied + 40
    rows = cluster.sql("SELECT request_id, extract(epoch FROM at), user_id, username, method, path, status, "
                       "latency_ms, client FROM activity WHERE request_id LIKE 'copy-%'")
    for rid, at, user_id, username, method, path, status, latency, client in rows:
        assert started - 1 <= float(at) <= ended + 1, (rid, at, started, ended)
        assert (method, client) == ("GET", "127.0.0.1"), rid
        if rid.startswith("copy-user-"):
            assert (user_id, username, path, status) == (str(uid), "zoe.copy_1-x", "/tasks", "200"), rid
        else:
            assert (user_id, username, path, status) == ("", "", "/no/such/route", "404"), rid
        assert 0 <= float(latency) < 10000 and abs(float(latency) * 1000 - round(float(latency) * 1000)) < 1e-6
    # The COPY connection is the one whose last command was a COPY.
    killed = cluster.admin_sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE application_name = 'webd' AND query LIKE 'COPY activity%'").strip()
    assert killed == "1", killed
    for i in range(200):
        webd.request("GET", "/no/such/route", headers={"X-Request-Id": f"after-kill-{i}"})
    wait_until(lambda: len(logged_ids(cluster, "after-kill-")) == 200, 10, "the 200 rows", interval=0.1)
    assert set(logged_ids(cluster, "after-kill-").values()) == {1}
    copied = metric(webd, "webd_activity_copied_total")
    for i in range(5):
        webd.request("GET", "/no/such/route", headers={"X-Request-Id": f"copy-again-{i}"})
    wait_until(lambda: metric(webd, "webd_activity_copied_total") >= copied + 5, 10, "COPY in use again",
               interval=0.1)


def test_batch_in_flight_when_the_connection_breaks(webd, cluster):
    """A batch whose connection is killed while the database runs it: its outcome is unknown to webd, which
    sends it again inserting only the rows that are missing. Every entry ends up in the table once."""
    cluster.admin_sql("CREATE FUNCTION test_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                      "IF NEW.request_id = 'inflight-0' THEN PERFORM pg_sleep(2); END IF; RETURN NEW; END $$; "
                      "CREATE TRIGGER test_slow BEFORE INSERT ON activity FOR EACH ROW EXECUTE FUNCTION test_slow()",
                      db="webd")
    try:
        retries = metric(webd, "webd_activity_retries_total")
        for i in range(10):
            webd.request("GET", "/no/such/route", headers={"X-Request-Id": f"inflight-{i}"})

        def running():
            # The batch goes as a COPY, or as an INSERT when the COPY connection is not ready.
            return cluster.admin_sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'webd' "
                                     "AND state = 'active' AND (query LIKE 'INSERT INTO activity%' "
                                     "OR query LIKE 'COPY activity%')").strip() != "0"
        wait_until(running, 10, "the batch to be in flight", interval=0.05)
        cluster.admin_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'webd'")
        expected = {f"inflight-{i}": 1 for i in range(10)}
        wait_until(lambda: logged_ids(cluster, "inflight-") == expected, 20, "every entry, once", interval=0.2)
        assert metric(webd, "webd_activity_retries_total") > retries
        time.sleep(0.5)
        assert logged_ids(cluster, "inflight-") == expected
    finally:
        cluster.admin_sql("DROP TRIGGER test_slow ON activity; DROP FUNCTION test_slow()", db="webd")


def test_health_probes_counted_not_logged(webd, cluster):
    before = metric(webd, 'webd_health_probes_total{result="ok"}')
    for i in range(25):
        assert webd.request("GET", "/healthcheck", headers={"X-Request-Id": f"probe-{i}"}).status_code == 200
    webd.request("HEAD", "/healthcheck/", headers={"X-Request-Id": "probe-head"})
    webd.request("GET", "/no/such/route", headers={"X-Request-Id": "after-probes"})
    wait_until(lambda: logged_ids(cluster, "after-probes"), 10, "the entry after the probes", interval=0.1)
    assert logged_ids(cluster, "probe-") == {}
    assert "request_id=probe-" not in webd.log()
    assert metric(webd, 'webd_health_probes_total{result="ok"}') >= before + 26


def test_metrics_for_local_clients_only(webd):
    r = webd.request("GET", "/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    for name in ("webd_activity_written_total", 'webd_activity_dropped_total{reason="queue_full"}',
                 'webd_activity_dropped_total{reason="refused"}', "webd_activity_queued",
                 "webd_activity_expired_total", 'webd_health_probes_total{result="ok"}'):
        assert name in webd.metrics(), name
    assert "# TYPE webd_activity_written_total counter" in r.text
    # Through a relay (which adds X-Forwarded-For), as if it didn't exist.
    assert_error(webd.request("GET", "/metrics", headers={"X-Forwarded-For": "203.0.113.9"}), 404, "not_found")


def insert_old_rows(cluster, n, age, prefix):
    cluster.sql("INSERT INTO activity (at, method, path, status, latency_ms, request_id, client) "
                "SELECT now() - :'v1'::interval, 'GET', '/old', 200, 1, :'v2' || g, '127.0.0.1' "
                "FROM generate_series(1, :'v3'::int) AS g", age, prefix, n)


def test_retention_deletes_old_rows_in_batches(new_webd, cluster):
    insert_old_rows(cluster, 2500, "100 days", "expired-")
    insert_old_rows(cluster, 10, "89 days", "kept-")
    w = new_webd(extra={"activity.retention": "90d", "activity.retention_interval": "1s"})
    wait_until(lambda: len(logged_ids(cluster, "expired-")) == 0, 20, "the old rows to go", interval=0.2)
    assert len(logged_ids(cluster, "kept-")) == 10
    assert metric(w, "webd_activity_expired_total") == 2500
    assert "deleted 2500 rows older than the retention of 7776000s" in w.log()
    # Periodic: rows that age past the limit later go too.
    insert_old_rows(cluster, 5, "91 days", "later-")
    wait_until(lambda: len(logged_ids(cluster, "later-")) == 0, 10, "the later rows to go", interval=0.2)
    cluster.sql("DELETE FROM activity WHERE request_id LIKE 'kept-%'")


def test_retention_off_keeps_everything(new_webd, cluster):
    insert_old_rows(cluster, 3, "3000 days", "ancient-")
    w = new_webd(extra={"activity.retention": "off", "activity.retention_interval": "1s"})
    time.sleep(2.5)
    assert len(logged_ids(cluster, "ancient-")) == 3
    assert metric(w, "webd_activity_expired_total") == 0
    cluster.sql("DELETE FROM activity WHERE request_id LIKE 'ancient-%'")


def test_retention_uses_the_time_index(cluster):
    plan = "\n".join(r[0] for r in cluster.sql(
        "SET enable_seqscan = off; EXPLAIN SELECT id FROM activity WHERE at < now() - interval '90 days' "
        "ORDER BY at LIMIT 1000"))
    assert "activity_at" in plan, plan
