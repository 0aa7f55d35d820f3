"""Many clients at once: 50 concurrent clients creating tasks lose and duplicate nothing; concurrent
registrations of one name make exactly one account."""

import threading
from concurrent.futures import ThreadPoolExecutor

import requests


def test_fifty_clients_creating_tasks(webd, cluster):
    users = [webd.user(f"load{i}") for i in range(5)]
    clients, per_client = 50, 8
    barrier = threading.Barrier(clients, timeout=30)

    def client(n):
        uid, token = users[n % len(users)]
        made = []
        with requests.Session() as s:
            barrier.wait()
            for i in range(per_client):
                title = f"client {n} task {i}"
                r = webd.request("POST", "/tasks", token=token, body={"title": title}, session=s, timeout=30)
                assert r.status_code == 201, r.text
                made.append((uid, r.json()["id"], title))
        return made

    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = [f.result(timeout=120) for f in [pool.submit(client, n) for n in range(clients)]]

    acked = [t for made in results for t in made]
    assert len(acked) == clients * per_client
    ids = [tid for _, tid, _ in acked]
    assert len(set(ids)) == len(ids), "an id was handed out twice"

    uids = sorted({uid for uid, _, _ in acked})
    rows = cluster.sql("SELECT user_id, id, title FROM tasks WHERE user_id = ANY(string_to_array(:'v1', ',')::bigint[])",
                       ",".join(map(str, uids)))
    stored = sorted((int(u), int(i), t) for u, i, t in rows)
    assert stored == sorted(acked), "the table doesn't hold exactly the acknowledged tasks"
    assert len({t for _, _, t in stored}) == len(stored), "a task was stored twice"

    # The API agrees with the table.
    for uid, token in users:
        seen, offset = [], 0
        while offset is not None:
            page = webd.request("GET", f"/tasks?limit=100&offset={offset}", token=token).json()
            seen += [t["id"] for t in page["items"]]
            offset = page["next_offset"]
            assert len(seen) <= clients * per_client
        assert sorted(seen) == sorted(i for u, i, _ in acked if u == uid)
        assert seen == sorted(seen, reverse=True)


def test_concurrent_registrations_of_one_name(webd, cluster):
    n = 8
    barrier = threading.Barrier(n, timeout=30)

    def register(_):
        barrier.wait()
        return webd.request("POST", "/auth/register", session=requests.Session(), timeout=30,
                            body={"username": "contested", "password": "contested password"}).status_code

    with ThreadPoolExecutor(max_workers=n) as pool:
        codes = sorted(pool.map(register, range(n), timeout=60))
    assert codes == [201] + [409] * (n - 1)
    assert cluster.sql("SELECT count(*) FROM users WHERE username = 'contested'") == [["1"]]


def test_failing_statements_dont_take_others_down(webd, cluster):
    """Statements that fail in the database (here: tasks for a user id that doesn't exist, with a
    validly signed token) run next to good ones; webd batches the statements of one loop turn into one
    transaction and, when one fails, sends the others again on their own. Every good write must still
    be acknowledged and stored exactly once, and every bad one refused."""
    import time as _time

    import jwt
    uid, token = webd.user("mixed")
    now = int(_time.time())
    ghost = jwt.encode({"sub": "987654321", "name": "ghost", "iat": now, "exp": now + 600, "iss": "webd"},
                       webd.key(), algorithm="HS256")
    clients, per_client = 24, 10
    barrier = threading.Barrier(clients, timeout=30)

    def client(n):
        good = n % 3 != 0
        out = []
        with requests.Session() as s:
            barrier.wait()
            for i in range(per_client):
                title = f"mixed {n} {i}"
                r = webd.request("POST", "/tasks", token=token if good else ghost, body={"title": title},
                                 session=s, timeout=30)
                out.append((good, title, r.status_code, r.json().get("id")))
        return out

    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = [x for f in [pool.submit(client, n) for n in range(clients)] for x in f.result(timeout=120)]
    for good, title, status, _ in results:
        assert status == (201 if good else 401), (good, title, status)
    acked = sorted((tid, title) for good, title, _, tid in results if good)
    rows = cluster.sql("SELECT id, title FROM tasks WHERE user_id = :'v1'", uid)
    assert sorted((int(i), t) for i, t in rows) == acked
    assert cluster.sql("SELECT count(*) FROM tasks WHERE user_id = 987654321") == [["0"]]
