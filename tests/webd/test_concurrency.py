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
