"""django-tenants' `SET search_path` travels in front of the first statement after a change of workspace
(config/postgresql): no round trip of its own, and every statement still runs in the workspace it was meant for —
after an error, inside a transaction, with cursors made before a change and sent after it, and on the paths that
cannot carry it in front (executemany, named cursors)."""
from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from chat.models import Conversation
from tests.factories import workspace_with_owner


def _two_made():
    first, second = workspace_with_owner(name="Path One"), workspace_with_owner(name="Path Two")
    return first.workspace, second.workspace


@pytest.fixture()
def two(db):
    yield _two_made()
    connection.set_schema_to_public()


@pytest.fixture()
def two_tx():  # committed data, autocommit (the suite's autouse _database fixture unblocks the database)
    yield _two_made()
    connection.set_schema_to_public()


def current_schema(cursor) -> str:
    cursor.execute("SELECT current_schema()")
    return cursor.fetchone()[0]


def _leave_first(first):
    """Switch to `first` and run a statement there: PostgreSQL's path is `first`'s, and the connection knows it."""
    connection.set_tenant(first)
    with connection.cursor() as cursor:
        assert current_schema(cursor) == first.schema_name


def sent_statements():
    sent: list[str] = []

    def record(execute, sql, params, many, context):
        sent.append(sql)
        return execute(sql, params, many, context)

    return sent, connection.execute_wrapper(record)


def test_a_change_of_workspace_costs_no_statement_of_its_own_and_lands_in_the_right_schema(two):
    sent, recording = sent_statements()
    with recording:
        for workspace in [*two, *two]:
            connection.set_tenant(workspace)
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_schema(), %s", [7])
                assert cursor.fetchall() == [(workspace.schema_name, 7)]
                assert cursor.rowcount == 1
            with connection.cursor() as cursor:
                assert current_schema(cursor) == workspace.schema_name
    assert sent == ["SELECT current_schema(), %s", "SELECT current_schema()"] * 4


def test_the_orm_reads_and_writes_the_workspace_it_was_switched_to(two):
    first, second = two
    connection.set_tenant(first)
    Conversation.objects.create(visitor_id="v-one", channel="api")
    connection.set_tenant(second)
    assert not Conversation.objects.filter(visitor_id="v-one").exists()
    updated = Conversation.objects.filter(visitor_id="v-one").update(visitor_id="v-two")
    assert updated == 0
    connection.set_tenant(first)
    assert Conversation.objects.filter(visitor_id="v-one").update(visitor_id="v-one") == 1


def test_a_failed_first_statement_leaves_the_set_to_be_sent_again(two):
    first, second = two
    _leave_first(first)
    connection.set_tenant(second)
    with pytest.raises(DatabaseError), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 / 0")  # the SET in front of it is rolled back with it
    with connection.cursor() as cursor:
        assert current_schema(cursor) == second.schema_name


def test_a_cursor_made_before_a_change_and_used_after_it_does_not_leave_the_old_path_behind(two):
    first, second = two
    connection.set_tenant(first)
    early = connection.cursor()  # its SET (first) is pending
    connection.set_tenant(second)
    with connection.cursor() as cursor:
        assert current_schema(cursor) == second.schema_name
    assert current_schema(early) == first.schema_name  # it sends the path it was made for ...
    early.close()
    with connection.cursor() as cursor:  # ... and the next cursor puts the wanted one back
        assert current_schema(cursor) == second.schema_name


def test_a_cursor_closed_unused_does_not_count_as_set(two):
    first, second = two
    _leave_first(first)
    connection.set_tenant(second)
    connection.cursor().close()
    with connection.cursor() as cursor:
        assert current_schema(cursor) == second.schema_name


def test_executemany_and_named_cursors_send_the_set_first(two):
    first, second = two
    connection.set_tenant(second)
    Conversation.objects.create(visitor_id="many", channel="api")
    connection.set_tenant(first)
    Conversation.objects.create(visitor_id="many", channel="api")
    connection.set_tenant(second)
    with connection.cursor() as cursor:
        cursor.executemany("UPDATE chat_conversation SET title = title || %s WHERE visitor_id = 'many'",
                           [("a",), ("b",)])
    assert list(Conversation.objects.values_list("title", flat=True)) == ["ab"]
    connection.set_tenant(first)
    with transaction.atomic():  # a server-side (named) cursor
        titles = list(Conversation.objects.values_list("title", flat=True).iterator(chunk_size=1))
    assert titles == [""]


# --- the same cursor again after a rollback, and in and out of transactions (found by review) ---------------------


def test_same_cursor_after_failed_first_statement_in_autocommit(two_tx):
    first, second = two_tx
    _leave_first(first)
    connection.set_tenant(second)
    assert connection.get_autocommit() and not connection.in_atomic_block
    with connection.cursor() as cursor:
        with pytest.raises(DatabaseError):
            cursor.execute("SELECT 1 / 0")  # SET second + failing SELECT: rolled back together
        assert current_schema(cursor) == second.schema_name  # the same cursor, reused


def test_cursor_made_outside_atomic_first_used_inside_one_that_rolls_back(two_tx):
    first, second = two_tx
    _leave_first(first)
    connection.set_tenant(second)
    with connection.cursor() as cursor:
        with pytest.raises(ZeroDivisionError), transaction.atomic():
            assert current_schema(cursor) == second.schema_name
            1 / 0
        assert current_schema(cursor) == second.schema_name


@pytest.mark.parametrize("fixture", ["two", "two_tx"])
def test_nested_savepoint_rollback_after_combined_statement(fixture, request):
    first, second = request.getfixturevalue(fixture)
    _leave_first(first)
    with transaction.atomic():
        connection.set_tenant(second)
        with pytest.raises(ZeroDivisionError), transaction.atomic():
            with connection.cursor() as cursor:
                assert current_schema(cursor) == second.schema_name
            1 / 0
        with connection.cursor() as cursor:
            assert current_schema(cursor) == second.schema_name
    with connection.cursor() as cursor:
        assert current_schema(cursor) == second.schema_name


def test_outer_atomic_rollback_after_combined_statement(two_tx):
    first, second = two_tx
    _leave_first(first)
    connection.set_tenant(second)
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        with connection.cursor() as cursor:
            assert current_schema(cursor) == second.schema_name
        1 / 0
    with connection.cursor() as cursor:
        assert current_schema(cursor) == second.schema_name


def test_a_percent_in_a_schema_name_reaches_the_interpolated_string():
    # django-tenants accepts "%" in a schema name (PGSQL_VALID_SCHEMA_NAME); the project's slugs never produce one.
    connection.set_schema("ws_a%%b")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('search_path'), %s", [1])
            assert cursor.fetchone()[0] == '"ws_a%%b", public'
    finally:
        connection.set_schema_to_public()


def test_cursor_made_inside_a_transaction_after_its_set_used_after_rollback(two_tx):
    first, second = two_tx
    _leave_first(first)
    connection.set_tenant(second)
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        with connection.cursor() as cursor:
            assert current_schema(cursor) == second.schema_name
        late = connection.cursor()  # the path counts as set: nothing pending on it
        1 / 0
    assert current_schema(late) == second.schema_name
    late.close()
