"""PostgreSQL going away and coming back: /healthcheck says 503 while it is down and 200 after; a
restart in the middle of a write load loses no acknowledged write (every 201 is in the table), and
every other answer is a clean 503."""

import threading
import time

import requests

from webdtest import Load, assert_error, wait_until


def health(webd):
    try:
        return webd.request("GET", "/healthcheck", timeout=5)
    except requests.RequestException:
        return None


def test_healthcheck_follows_the_database(webd, cluster):
    _, token = webd.user("health")
    assert health(webd).status_code == 200
    cluster.stop()
    try:
        # (A Response is falsy when its status is an error: wrap it.)
        r, = wait_until(lambda: (lambda h: (h,) if h is not None and h.status_code == 503 else None)(health(webd)),
                        15, "/healthcheck to answer 503")
        assert r.json() == {"status": "unavailable", "database": "down"}
        assert r.headers["Content-Type"].startswith("application/json")
        assert_error(webd.request("POST", "/tasks", token=token, body={"title": "while down"}), 503,
                     "unavailable")
        assert_error(webd.request("GET", "/tasks", token=token), 503, "unavailable")
        # Tokens are checked without the database: a bad one is still 401, not 503.
        assert_error(webd.request("GET", "/tasks", token="bad"), 401, "unauthorized")
    finally:
        cluster.start()
    wait_until(lambda: (lambda h: h is not None and h.status_code == 200)(health(webd)), 20,
               "/healthcheck to answer 200 again")
    assert webd.request("POST", "/tasks", token=token, body={"title": "after"}).status_code == 201
    assert "Database unavailable" in webd.log() and "Database available" in webd.log()


def test_restart_under_write_load(webd, cluster):
    _, token = webd.user("writer")
    lock = threading.Lock()
    acked, statuses, counter = [], {}, iter(range(10**9))
    sessions = {}

    def write(i):
        s = sessions.setdefault(i, requests.Session())
        with lock:
            n = next(counter)
        if n >= 3000:
            time.sleep(0.05)
            return
        title = f"w{n}"
        try:
            r = webd.request("POST", "/tasks", token=token, body={"title": title}, session=s, timeout=15)
        except requests.RequestException as e:
            with lock:
                statuses["exception"] = statuses.get("exception", 0) + 1
            raise AssertionError(f"webd dropped a request: {e!r}")
        with lock:
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 201:
                acked.append((r.json()["id"], title))
        if r.status_code != 201:
            assert_error(r, 503, "unavailable")
            time.sleep(0.02)

    load = Load(8, write, max_seconds=25).start()
    try:
        time.sleep(1.5)
        before = len(acked)
        cluster.restart()
        restarted = time.monotonic()
        wait_until(lambda: any(t[0] for t in acked[-1:]) and len(acked) > before + 50, 20,
                   "writes to be acknowledged again after the restart")
        time.sleep(1.0)
    finally:
        errors = load.stop()
    assert not errors, errors[:3]
    assert set(statuses) <= {201, 503}, statuses
    assert before > 0 and time.monotonic() - restarted < 25
    rows = cluster.sql("SELECT id, title FROM tasks WHERE user_id = (SELECT id FROM users WHERE username = 'writer')")
    stored = {(int(i), t) for i, t in rows}
    missing = [a for a in acked if a not in stored]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    # Nothing stored twice under one title (a write is never sent twice).
    titles = [t for _, t in stored]
    assert len(titles) == len(set(titles))
    print(f"statuses: {statuses}, acknowledged: {len(acked)}, stored: {len(stored)}")
