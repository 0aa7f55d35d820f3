"""SQL metacharacters in every field a client controls are stored and returned exactly as sent
(parameterised statements only); NUL can't get in; nothing a client sends changes the schema."""

import pytest

from webdtest import assert_error

NASTY = [
    "'",
    "''",
    '"',
    ";",
    "--",
    "\\",
    "%",
    "_",
    "' OR '1'='1",
    "'; DROP TABLE tasks; --",
    "Robert'); DROP TABLE users;--",
    "\\'; SELECT pg_sleep(10); --",
    "$1 $2 :'v1' %s %d {}",
    "E'\\x41'",
    "/* comment */ UNION SELECT * FROM users",
    "line1\nline2\ttab\r",
    "ünïcødé ✓ 日本語 🙂",
    "  leading and trailing  ",
]


def table_count(cluster, table):
    return int(cluster.sql(f"SELECT count(*) FROM {table}")[0][0])


@pytest.fixture(scope="module")
def carol(webd):
    # Passwords may hold anything: they are hashed, never part of a statement.
    password = "p@ss'; DROP TABLE users; --\\%\"_"
    webd.register("carol", password)
    return webd.login("carol", password)


@pytest.mark.parametrize("text", NASTY)
def test_title_and_description_stored_literally(webd, cluster, carol, text):
    title = ("t" + text)[:200]
    r = webd.request("POST", "/tasks", token=carol, body={"title": title, "description": text})
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["title"] == title and task["description"] == text
    tid = task["id"]
    assert webd.request("GET", f"/tasks/{tid}", token=carol).json()["description"] == text
    # In the table, byte for byte (read back with psql variables, never spliced into SQL).
    rows = cluster.sql("SELECT title, description FROM tasks WHERE id = :'v1'", tid)
    assert rows == [[title, text]]
    same = cluster.sql("SELECT count(*) FROM tasks WHERE description = :'v1' AND id = :'v2'", text, tid)
    assert same == [["1"]]
    # Through PUT and PATCH as well.
    r = webd.request("PUT", f"/tasks/{tid}", token=carol, body={"title": text or "x", "description": title})
    assert (r.json()["title"], r.json()["description"]) == (text or "x", title)
    r = webd.request("PATCH", f"/tasks/{tid}", token=carol, body={"description": text + text})
    assert r.json()["description"] == text + text


def test_schema_untouched(cluster, carol):
    tables = {r[0] for r in cluster.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"users", "tasks", "activity", "schema_migrations"} <= tables
    assert table_count(cluster, "users") >= 1


@pytest.mark.parametrize("name", ["a'b", 'a"b', "a;b", "a/b", "a\\b", "a%b", "a b", "ab'--"])
def test_usernames_with_metacharacters_refused(webd, cluster, name):
    before = table_count(cluster, "users")
    err = assert_error(webd.request("POST", "/auth/register", body={"username": name, "password": "long enough"}),
                       400, "validation_failed")
    assert "username" in err["fields"]
    assert_error(webd.request("POST", "/auth/login", body={"username": name, "password": "long enough"}),
                 401, "unauthorized")
    assert table_count(cluster, "users") == before


def test_username_punctuation_allowed(webd, cluster):
    info = webd.register("dot.dash-under_score")
    rows = cluster.sql("SELECT username FROM users WHERE id = :'v1'", info["id"])
    assert rows == [["dot.dash-under_score"]]


@pytest.mark.parametrize("raw", [
    b'{"title": "nul \\u0000 inside"}',
    b'{"title": "ok", "description": "\\u0000"}',
    b'{"title": "raw \x00 byte"}',
    b'{"title": "ok"}\x00',
    b'{"title": "bad \\uZZZZ escape"}',
    b'{"title": "short \\u12"}',
])
def test_nul_refused(webd, cluster, carol, raw):
    before = table_count(cluster, "tasks")
    r = webd.request("POST", "/tasks", token=carol, raw=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_request")
    assert table_count(cluster, "tasks") == before


def test_escaped_backslash_u0000_is_text(webd, carol):
    """"\\\\u0000" in JSON is a backslash followed by "u0000": six ordinary characters."""
    r = webd.request("POST", "/tasks", token=carol, raw=b'{"title": "x\\\\u0000y"}',
                     headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.json()["title"] == "x\\u0000y"


@pytest.mark.parametrize("query", ["done=true'--", "limit=1%27%20OR%20%271%27=%271", "offset=0;DELETE",
                                   "done=%00", "limit=%25"])
def test_query_parameters(webd, carol, query):
    assert_error(webd.request("GET", f"/tasks?{query}", token=carol), 400, "validation_failed")


def test_paths_and_headers(webd, carol):
    for path in ("/tasks/1%27%20OR%201=1", "/tasks/1;DROP", "/tasks/%2527"):
        assert_error(webd.request("GET", path, token=carol), 404, "not_found")
    assert_error(webd.request("GET", "/tasks", headers={"Authorization": "Bearer ' OR 1=1 --"}), 401,
                 "unauthorized")
    r = webd.request("GET", "/tasks", token=carol, headers={"X-Request-Id": "x'; DROP TABLE activity; --"})
    assert r.status_code == 200 and "'" not in r.headers["X-Request-Id"]
