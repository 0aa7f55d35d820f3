"""Upgrading a database made by an older webd (schema version 1) that holds what the new schema forbids:
usernames that differ only by case, and activity rows tied to users by a foreign key. The migrations apply
without failing, keep every account and every row, and leave the rules in force."""

import pytest

import webdtest

# Schema version 1 as webd created it.
V1 = """
CREATE TABLE schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE users (id bigserial PRIMARY KEY, username text NOT NULL UNIQUE, password_hash text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE tasks (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  title text NOT NULL, description text NOT NULL DEFAULT '', done boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX tasks_user_id_id ON tasks (user_id, id DESC);
CREATE TABLE activity (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(),
  user_id bigint REFERENCES users(id) ON DELETE SET NULL, method text NOT NULL, path text NOT NULL,
  status int NOT NULL, latency_ms double precision NOT NULL, request_id text NOT NULL, client text NOT NULL);
CREATE INDEX activity_user_id_id ON activity (user_id, id DESC);
INSERT INTO schema_migrations (version) VALUES (1);
"""


@pytest.fixture(scope="module")
def old_cluster():
    c = webdtest.PgCluster()
    try:
        yield c
    finally:
        c.cleanup()


def test_upgrade_keeps_case_duplicates_and_activity(old_cluster, tmp_path):
    c = old_cluster
    c.sql(V1)
    names = ["alice", "ALICE", "Alice", "ALICE.2", "bob", "b" * 32, "B" * 32]
    for n in names:
        c.sql("INSERT INTO users (username, password_hash) VALUES (:'v1', 'x')", n)
    ids = {n: int(c.sql("SELECT id FROM users WHERE username = :'v1'", n)[0][0]) for n in names}
    c.sql("INSERT INTO activity (user_id, method, path, status, latency_ms, request_id, client) "
          "SELECT id, 'GET', '/tasks', 200, 1, 'old-' || id, '127.0.0.1' FROM users")

    w = webdtest.Webd(tmp_path / "webd", c)
    try:
        w.start()
        assert "3 migrations applied" in w.log()
        users = dict(c.sql("SELECT id, username FROM users"))
        # The oldest of each group keeps its name; the others get NAME.ID (cut to 32), none is lost.
        assert users[str(ids["alice"])] == "alice"
        # ALICE is user 2, and "ALICE.2" is taken by another account: a further ".1".
        assert ids["ALICE"] == 2 and users[str(ids["ALICE"])] == "ALICE.2.1"
        assert users[str(ids["Alice"])] == f"Alice.{ids['Alice']}"
        assert users[str(ids["ALICE.2"])] == "ALICE.2"
        assert users[str(ids["b" * 32])] == "b" * 32
        renamed_b = users[str(ids["B" * 32])]
        assert renamed_b.endswith(f".{ids['B' * 32]}") and len(renamed_b) == 32
        assert len(users) == len(names)
        assert len({u.lower() for u in users.values()}) == len(names)
        renamed = c.sql("SELECT user_id, old_username, new_username FROM users_renamed ORDER BY user_id")
        assert [r[1] for r in renamed] == ["ALICE", "Alice", "B" * 32]
        # Renamed accounts' tokens are revoked (their name changed).
        gens = dict(c.sql("SELECT username, token_generation FROM users"))
        assert gens["alice"] == "0" and gens["ALICE.2.1"] == "1"

        # Case-insensitive from now on.
        r = w.request("POST", "/auth/register", body={"username": "aLiCe", "password": "long enough pw"})
        assert r.status_code == 409, r.text
        # The old activity rows keep their user, now with the name; the foreign key is gone.
        assert c.sql("SELECT username FROM activity WHERE request_id = :'v1'", f"old-{ids['bob']}") == [["bob"]]
        c.sql("DELETE FROM users WHERE username = 'bob'")
        assert c.sql("SELECT user_id, username FROM activity WHERE request_id = :'v1'",
                     f"old-{ids['bob']}") == [[str(ids["bob"]), "bob"]]
        assert c.sql("SELECT count(*) FROM pg_constraint WHERE conrelid = 'activity'::regclass "
                     "AND contype = 'f'") == [["0"]]
    finally:
        code = w.stop()
    w.check_clean_exit(code)
