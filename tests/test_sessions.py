"""The catalog's sessions table (withcache.sessions): live sessions, logout, bounds."""

from withcache import sessions


def test_logout_a_session_ended_is_no_longer_live(conn):
    sessions.begin_session(conn, "nonce-a", expires=2000.0, now=1000.0)
    sessions.begin_session(conn, "nonce-b", expires=2000.0, now=1000.0)
    assert sessions.session_live(conn, "nonce-a", now=1500.0)
    assert sessions.end_session(conn, "nonce-a")
    assert not sessions.session_live(conn, "nonce-a", now=1500.0)
    assert sessions.session_live(conn, "nonce-b", now=1500.0)  # other operators stay in
    assert not sessions.end_session(conn, "nonce-a")


def test_logout_a_session_is_live_only_until_it_expires(conn):
    sessions.begin_session(conn, "nonce", expires=2000.0, now=1000.0)
    assert sessions.session_live(conn, "nonce", now=1999.0)
    assert not sessions.session_live(conn, "nonce", now=2000.0)
    assert not sessions.session_live(conn, "never-begun", now=1000.0)


def test_logout_the_table_never_holds_the_session_id_a_cookie_carries(conn):
    sessions.begin_session(conn, "nonce-in-a-cookie", expires=2000.0, now=1000.0)
    ((row_id,),) = conn.exec_driver_sql("SELECT id FROM sessions").fetchall()
    assert "nonce-in-a-cookie" not in row_id and len(row_id) == 64


def test_logout_the_table_is_bounded_expired_rows_go_and_the_oldest_live_ones_end(conn):
    for n in range(5):
        sessions.begin_session(conn, f"old-{n}", expires=1100.0 + n, now=1000.0)
    # Once they expired, the next login prunes them.
    sessions.begin_session(conn, "new", expires=9000.0, now=5000.0)
    assert conn.exec_driver_sql("SELECT COUNT(*) FROM sessions").fetchone() == (1,)
    for n in range(4):
        sessions.begin_session(conn, f"more-{n}", expires=9001.0 + n, now=5000.0, cap=3)
    assert conn.exec_driver_sql("SELECT COUNT(*) FROM sessions").fetchone() == (3,)
    assert not sessions.session_live(conn, "new", now=5000.0)  # the oldest ended first
    assert sessions.session_live(conn, "more-3", now=5000.0)
