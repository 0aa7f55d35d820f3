"""The task routes and the /Tarefa aliases: every route's success and failure paths, ownership,
validation with field errors, pagination, and the HTTP details every answer shares (error shape,
Content-Type, Location, Allow, X-Request-Id, body limits)."""

import re

import pytest
import requests

from webdtest import assert_error

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
TASK_KEYS = {"id", "title", "description", "done", "created_at", "updated_at"}


@pytest.fixture(scope="module")
def alice(webd):
    return webd.user("alice")


@pytest.fixture(scope="module")
def bob(webd):
    return webd.user("bob")


def create(webd, token, **fields):
    r = webd.request("POST", "/tasks", token=token, body=fields)
    assert r.status_code == 201, r.text
    return r.json()


def test_create_get_update_delete(webd, alice):
    _, tok = alice
    r = webd.request("POST", "/tasks", token=tok, body={"title": "buy milk"})
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    task = r.json()
    assert set(task) == TASK_KEYS
    assert r.headers["Location"] == f"/tasks/{task['id']}"
    assert task["title"] == "buy milk" and task["description"] == "" and task["done"] is False
    assert RFC3339.match(task["created_at"]) and task["created_at"] == task["updated_at"]

    r = webd.request("GET", f"/tasks/{task['id']}", token=tok)
    assert r.status_code == 200 and r.json() == task

    r = webd.request("PUT", f"/tasks/{task['id']}", token=tok,
                     body={"title": "buy oat milk", "description": "2 litres", "done": True})
    assert r.status_code == 200, r.text
    put = r.json()
    assert (put["title"], put["description"], put["done"]) == ("buy oat milk", "2 litres", True)
    assert put["created_at"] == task["created_at"] and put["updated_at"] >= task["updated_at"]

    # PUT replaces: left-out fields go back to their defaults.
    r = webd.request("PUT", f"/tasks/{task['id']}", token=tok, body={"title": "just milk"})
    assert r.status_code == 200
    assert (r.json()["description"], r.json()["done"]) == ("", False)

    r = webd.request("PATCH", f"/tasks/{task['id']}", token=tok, body={"done": True})
    assert r.status_code == 200
    assert (r.json()["title"], r.json()["done"]) == ("just milk", True)
    r = webd.request("PATCH", f"/tasks/{task['id']}", token=tok, body={"description": "skimmed"})
    assert (r.json()["title"], r.json()["description"], r.json()["done"]) == ("just milk", "skimmed", True)

    r = webd.request("DELETE", f"/tasks/{task['id']}", token=tok)
    assert r.status_code == 204 and r.content == b""
    assert_error(webd.request("GET", f"/tasks/{task['id']}", token=tok), 404, "not_found")
    assert_error(webd.request("DELETE", f"/tasks/{task['id']}", token=tok), 404, "not_found")
    assert_error(webd.request("PUT", f"/tasks/{task['id']}", token=tok, body={"title": "x"}), 404,
                 "not_found")
    assert_error(webd.request("PATCH", f"/tasks/{task['id']}", token=tok, body={"done": False}), 404,
                 "not_found")


def test_other_users_tasks_are_not_found(webd, alice, bob):
    _, atok = alice
    _, btok = bob
    task = create(webd, atok, title="alice's secret")
    tid = task["id"]
    assert_error(webd.request("GET", f"/tasks/{tid}", token=btok), 404, "not_found")
    assert_error(webd.request("PUT", f"/tasks/{tid}", token=btok, body={"title": "mine"}), 404, "not_found")
    assert_error(webd.request("PATCH", f"/tasks/{tid}", token=btok, body={"done": True}), 404, "not_found")
    assert_error(webd.request("DELETE", f"/tasks/{tid}", token=btok), 404, "not_found")
    assert all(t["id"] != tid for t in webd.request("GET", "/tasks?limit=100", token=btok).json()["items"])
    # Untouched for its owner.
    assert webd.request("GET", f"/tasks/{tid}", token=atok).json() == task


@pytest.mark.parametrize("body, fields", [
    ({}, ["title"]),
    ({"title": ""}, ["title"]),
    ({"title": "t" * 201}, ["title"]),
    ({"title": 42}, ["title"]),
    ({"title": None}, ["title"]),
    ({"title": "ok", "description": "d" * 2001}, ["description"]),
    ({"title": "ok", "description": ["x"]}, ["description"]),
    ({"title": "ok", "done": "yes"}, ["done"]),
    ({"title": "ok", "done": 1}, ["done"]),
    ({"title": "ok", "owner": 2}, ["owner"]),
    ({"title": "ok", "id": 7, "user_id": 1}, ["id", "user_id"]),
])
def test_create_and_put_validation(webd, alice, body, fields):
    _, tok = alice
    task = create(webd, tok, title="target")
    for method, path in (("POST", "/tasks"), ("PUT", f"/tasks/{task['id']}")):
        err = assert_error(webd.request(method, path, token=tok, body=body), 400, "validation_failed")
        assert sorted(err["fields"]) == sorted(fields), err
    assert webd.request("GET", f"/tasks/{task['id']}", token=tok).json()["title"] == "target"


def test_lengths_count_characters(webd, alice):
    _, tok = alice
    title = "é" * 200  # 400 bytes, 200 characters
    assert create(webd, tok, title=title, description="ü" * 2000)["title"] == title
    assert_error(webd.request("POST", "/tasks", token=tok, body={"title": "é" * 201}), 400,
                 "validation_failed")


def test_patch_validation(webd, alice):
    _, tok = alice
    tid = create(webd, tok, title="patch me")["id"]
    assert_error(webd.request("PATCH", f"/tasks/{tid}", token=tok, body={}), 400, "validation_failed")
    for body, field in (({"title": ""}, "title"), ({"done": "no"}, "done"), ({"colour": "red"}, "colour")):
        err = assert_error(webd.request("PATCH", f"/tasks/{tid}", token=tok, body=body), 400,
                           "validation_failed")
        assert field in err["fields"]


def test_list_pagination_and_filter(webd):
    _, tok = webd.user("lister")
    ids = [create(webd, tok, title=f"task {i}", done=(i % 3 == 0))["id"] for i in range(7)]
    r = webd.request("GET", "/tasks", token=tok)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"items", "limit", "offset", "next_offset"}
    assert [t["id"] for t in body["items"]] == ids[::-1]
    assert (body["limit"], body["offset"], body["next_offset"]) == (20, 0, None)

    pages, offset = [], 0
    while offset is not None:
        page = webd.request("GET", f"/tasks?limit=3&offset={offset}", token=tok).json()
        assert page["limit"] == 3 and page["offset"] == offset
        pages.append([t["id"] for t in page["items"]])
        offset = page["next_offset"]
        assert len(pages) < 10
    assert pages == [ids[6:3:-1], ids[3:0:-1], ids[0:1]]

    done = webd.request("GET", "/tasks?done=true", token=tok).json()["items"]
    todo = webd.request("GET", "/tasks?done=false&limit=100", token=tok).json()["items"]
    assert [t["id"] for t in done] == [ids[i] for i in (6, 3, 0)]
    assert all(not t["done"] for t in todo) and len(todo) == 4
    assert webd.request("GET", "/tasks?offset=50", token=tok).json()["items"] == []


@pytest.mark.parametrize("query, field", [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"),
    ("offset=-5", "offset"), ("offset=x", "offset"), ("done=yes", "done"), ("done=", "done"),
    ("limit=1;DROP%20TABLE%20tasks", "limit"),
])
def test_list_bad_parameters(webd, alice, query, field):
    _, tok = alice
    err = assert_error(webd.request("GET", f"/tasks?{query}", token=tok), 400, "validation_failed")
    assert field in err["fields"]


@pytest.mark.parametrize("path", ["/tasks/0", "/tasks/abc", "/tasks/-1", "/tasks/1.5", "/tasks/01",
                                  "/tasks/99999999999999999999", "/tasks/1/extra", "/tasks//",
                                  "/tasks/1//", "/Tarefa/x/", "/tarefa/1", "/tasks/0/"])
def test_bad_ids_are_not_found(webd, alice, path):
    _, tok = alice
    assert_error(webd.request("GET", path, token=tok), 404, "not_found")


def test_tarefa_aliases(webd, alice):
    _, tok = alice
    for collection in ("/Tarefa", "/Tarefa/"):
        r = webd.request("POST", collection, token=tok, body={"title": f"via {collection}"})
        assert r.status_code == 201, r.text
        tid = r.json()["id"]
        assert r.headers["Location"] == f"/tasks/{tid}"
        listed = webd.request("GET", collection + "?limit=100", token=tok).json()["items"]
        assert tid in [t["id"] for t in listed]
        for item in (f"/Tarefa/{tid}", f"/Tarefa/{tid}/"):
            assert webd.request("GET", item, token=tok).json()["id"] == tid
            assert webd.request("PATCH", item, token=tok, body={"done": True}).json()["done"] is True
            assert webd.request("PUT", item, token=tok, body={"title": "renamed"}).json()["title"] == "renamed"
        assert webd.request("DELETE", f"/Tarefa/{tid}/", token=tok).status_code == 204
        assert_error(webd.request("GET", f"/tasks/{tid}", token=tok), 404, "not_found")
    assert_error(webd.request("GET", "/Tarefa"), 401, "unauthorized")


def test_method_not_allowed(webd, alice):
    _, tok = alice
    r = webd.request("DELETE", "/tasks", token=tok)
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["Allow"] == "GET, HEAD, POST"
    r = webd.request("POST", "/tasks/1", token=tok, body={"title": "x"})
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["Allow"] == "GET, HEAD, PUT, PATCH, DELETE"
    r = webd.request("POST", "/healthcheck")
    assert_error(r, 405, "method_not_allowed")
    r = webd.request("OPTIONS", "/Tarefa/")
    assert_error(r, 405, "method_not_allowed")


def test_unknown_routes(webd, alice):
    _, tok = alice
    for path in ("/", "/nope", "/tasksx", "/auth", "/auth/register/extra", "/activity/1"):
        assert_error(webd.request("GET", path, token=tok), 404, "not_found")


def test_auth_required_everywhere(webd):
    for method, path in (("GET", "/tasks"), ("POST", "/tasks"), ("GET", "/tasks/1"),
                         ("PUT", "/tasks/1"), ("PATCH", "/tasks/1"), ("DELETE", "/tasks/1"),
                         ("GET", "/activity")):
        assert_error(webd.request(method, path, body={"title": "x"}), 401, "unauthorized")


def test_bodies(webd, alice):
    _, tok = alice
    assert_error(webd.request("POST", "/tasks", token=tok, raw=b'{"title": "x"}',
                              headers={"Content-Type": "application/xml"}), 415, "unsupported_media_type")
    r = webd.request("POST", "/tasks", token=tok, raw=b'{"title": "charset"}',
                     headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 201
    for raw in (b"", b"{", b'{"title": "x"} trailing', b"[1]", b'"string"', b"\xff\xfe",
                b'{"title": "\xc3"}', b'{"title": "a\x00b"}', b'{"title": "\\ud800"}'):
        assert_error(webd.request("POST", "/tasks", token=tok, raw=raw,
                                  headers={"Content-Type": "application/json"}), 400, "bad_request")


def test_body_size_limit(webd, alice):
    _, tok = alice
    limit = 64 * 1024
    ok = {"title": "fits", "description": "d" * 1000}
    assert webd.request("POST", "/tasks", token=tok, body=ok).status_code == 201
    over = b'{"title": "big", "description": "' + b"d" * limit + b'"}'
    r = webd.request("POST", "/tasks", token=tok, raw=over, headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    # Far beyond: refused too (by evhttp itself, connection closed), never stored.
    huge = b"x" * (1024 * 1024)
    try:
        r = requests.post(webd.url + "/tasks", data=huge, timeout=10,
                          headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"})
        assert r.status_code == 413
    except requests.ConnectionError:
        pass
    assert webd.request("GET", "/healthcheck").status_code == 200


def test_request_ids(webd, alice):
    _, tok = alice
    r = webd.request("GET", "/tasks", token=tok, headers={"X-Request-Id": "client-id.1:2_3"})
    assert r.headers["X-Request-Id"] == "client-id.1:2_3"
    for bad in ("has space", "x" * 129, "semi;colon", "ünïcode"):
        r = webd.request("GET", "/tasks", token=tok, headers={"X-Request-Id": bad.encode()})
        assert r.headers["X-Request-Id"] != bad and re.match(r"^[A-Za-z0-9._:-]{1,128}$", r.headers["X-Request-Id"])
    ids = {webd.request("GET", "/nope").headers["X-Request-Id"] for _ in range(20)}
    assert len(ids) == 20


def test_head_and_cache_headers(webd, alice):
    _, tok = alice
    r = webd.request("HEAD", "/tasks", token=tok)
    assert r.status_code == 200 and r.content == b""
    r = webd.request("GET", "/tasks", token=tok)
    assert r.headers["Cache-Control"] == "no-store"


def test_healthcheck(webd):
    for path in ("/healthcheck", "/healthcheck/"):
        r = webd.request("GET", path)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json() == {"status": "ok", "database": "ok"}
