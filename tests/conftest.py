"""Test foundation: the real test database (committed data, visible to other processes), a session-scoped test
workspace, users per role, a live ASGI server, a Celery worker and Debian's Chromium for Playwright."""
from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in the test thread; Django would refuse ORM calls from it otherwise.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from tests.factories import WorkspaceWithOwner, member, workspace_with_owner  # noqa: E402
from tests.live import LiveServer, ManagedProcess, start_celery_worker, start_live_server  # noqa: E402

LOG_DIR = Path(__file__).resolve().parent.parent / ".data" / f"test-logs-{os.environ.get('TEST_DATABASE_NAME', 'test_customercare')}"


_session_guard = None  # the connection holding this run's claim on its test database name


def pytest_sessionstart(session: pytest.Session) -> None:
    """One test session per test database name on a PostgreSQL server. Two suites with the same TEST_DATABASE_NAME
    destroy each other: the second drops and recreates the first's database (--create-db), or cuts its connections
    and drops it when it ends. The claim is a session advisory lock in the server's `postgres` database, taken
    before pytest-django creates the test database and held until this process exits."""
    global _session_guard
    import psycopg
    from django.conf import settings

    name = getattr(settings, "TEST_DATABASE_NAME", None) if settings.configured else None
    if not name:
        return
    db = settings.DATABASES["default"]
    params = {"host": db.get("HOST") or None, "port": db.get("PORT") or None, "user": db.get("USER") or None,
              "password": db.get("PASSWORD") or None}
    try:
        guard = psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=10,
                                **{key: value for key, value in params.items() if value})
    except psycopg.Error:
        return  # no maintenance database to lock in: the run goes on unguarded (and fails later if the server is away)
    claimed = guard.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                            [f"ccgpt-test-database:{name}"]).fetchone()[0]
    if not claimed:
        guard.close()
        pytest.exit(f"another test session is using the test database {name!r} on this server; "
                    "give this one its own TEST_DATABASE_NAME (and TEST_REDIS_DB)", returncode=3)
    _session_guard = guard


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):  # noqa: F811  (extends pytest-django's)
    from django.conf import settings
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    own_databases = None
    with django_db_blocker.unblock():
        # pytest-django creates the test database only if a selected test uses `db`, `transactional_db`,
        # `live_server` or the django_db mark; without this, a run of other tests would use (and at the end cut the
        # connections of) the development database.
        if connection.settings_dict["NAME"] != settings.TEST_DATABASE_NAME:
            own_databases = setup_databases(verbosity=0, interactive=False, aliases={"default"})
        assert connection.settings_dict["NAME"] == settings.TEST_DATABASE_NAME
        cache._cache.get_client(write=True).flushdb()  # the test Redis db (TEST_REDIS_DB) only
        for folder in (settings.MEDIA_ROOT, settings.CHROMA_PATH):
            shutil.rmtree(folder, ignore_errors=True)
        call_command("setup_platform", "--json", stdout=io.StringIO())
    yield
    with django_db_blocker.unblock():
        # Other processes (live server, worker, pool threads) may still hold connections; the drop needs none.
        # Our own connection may have been closed by the server meanwhile: start from a fresh one.
        connection.close()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
        if own_databases is not None:
            teardown_databases(own_databases, verbosity=0)


@pytest.fixture(autouse=True)
def _database(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Every test uses the real test database with committed data, as the other processes see it."""
    from django.db import connection

    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        yield
        connection.set_schema_to_public()


@pytest.fixture(scope="session")
def tenant(django_db_setup, django_db_blocker) -> WorkspaceWithOwner:
    """The session's test workspace (created once) with its owner."""
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Session Workspace")


@pytest.fixture(scope="session")
def other_tenant(django_db_setup, django_db_blocker) -> WorkspaceWithOwner:
    """A second workspace, for isolation tests."""
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Other Workspace")


@pytest.fixture(scope="session")
def role_users(tenant, django_db_blocker) -> dict[str, object]:
    """One user per role in the session workspace (the owner is the workspace's owner)."""
    with django_db_blocker.unblock():
        users = {role: member(tenant.workspace, role) for role in ("admin", "agent", "viewer")}
    return {"owner": tenant.owner, **users}


@pytest.fixture
def host_client():
    """A Django test client bound to a host: host_client('acme.localhost')."""
    from django.test import Client

    def make(host: str, **kwargs) -> Client:
        return Client(HTTP_HOST=host, **kwargs)

    return make


@pytest.fixture(autouse=True)
def _live_server_helper() -> Iterator[None]:
    """Replaces pytest-django's helper of the same name: it would flush every table after each test that uses
    `live_server` (ours serves the committed test data to the whole session) and expects its own server class."""
    yield


@pytest.fixture(scope="session")
def live_server(django_db_setup, django_db_blocker) -> Iterator[LiveServer]:
    """A real ASGI server (uvicorn) on the test database; *.localhost hosts reach it."""
    from django.db import connection

    with django_db_blocker.unblock():
        server = start_live_server(connection.settings_dict, LOG_DIR)
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def worker_mail_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("worker-mail")


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, worker_mail_folder) -> Iterator[ManagedProcess]:
    """The session's worker. Its e-mails (staff notifications, digests, owner alerts) land as files in
    `worker_mail_folder` (django's filebased backend), so tests read what it really sent (`worker_mailbox`)."""
    from django.db import connection

    with django_db_blocker.unblock():
        worker = start_celery_worker(connection.settings_dict, LOG_DIR, extra_env={
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": str(worker_mail_folder)})
    yield worker
    worker.stop()


@pytest.fixture
def worker_mailbox(worker_mail_folder):
    from tests.browser.mailbox import Mailbox

    return Mailbox(worker_mail_folder)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium, headless, with the flags this closed network needs."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    args = dict(browser_type_launch_args)
    args["args"] = [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
    ]
    # Playwright turns Chromium's third-party storage partitioning off (microsoft/playwright#32230); then a
    # cross-site frame (the widget) gets no localStorage at all. Real browsers partition by default, so switch it
    # back on for every browser test: the browser is launched once per session, whichever test comes first.
    # The list is Playwright's own disabled features minus that one; Chromium takes the last --disable-features.
    args["args"] += [f"--disable-features={PLAYWRIGHT_DISABLED_FEATURES}",
                     "--enable-features=ThirdPartyStoragePartitioning,CDPScreenshotNewSurface,"
                     "SkipListAccountsWithoutGaiaCookies"]
    if executable:
        args["executable_path"] = executable
    return args


PLAYWRIGHT_DISABLED_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync,DestroyProfileOnBrowserClose,HttpsUpgrades,HttpsFirstBalancedModeAutoEnable,"
    "LensOverlay,MediaRouter,PaintHolding,AvoidCorsURLLoaderRestartOnRedirect,OptimizationHints,"
    "NetworkTimeServiceQuerying,AimEnabled,PreconnectToSearch"
)
_PLAYWRIGHT_FIXTURES = {"page", "context", "browser", "browser_context", "new_context", "playwright"}


# Suites whose cost grows with the number of workspaces in the test database (they migrate every one of them): run
# them first, while the database holds only a handful. In this order: tests/test_migrations.py reverses the public
# schema's migrations and must run before any server or worker (session fixtures) connects.
_RUN_FIRST = ("tests/test_migrations.py", "tests/tenants/test_migrate_schemas.py")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Order: workspace-count-sensitive suites first; browser tests last (Playwright's sync API keeps an event loop
    running in the main thread for the rest of the session, and tests that drive asyncio themselves — asyncio.run,
    async_to_sync — can't run after it starts)."""

    def group(item) -> tuple[int, int]:
        if item.nodeid.startswith(_RUN_FIRST):
            return 0, next(i for i, prefix in enumerate(_RUN_FIRST) if item.nodeid.startswith(prefix))
        if item.get_closest_marker("browser") is not None or _PLAYWRIGHT_FIXTURES & set(item.fixturenames):
            return 2, 0
        return 1, 0

    items.sort(key=group)


@pytest.fixture
def context(context):
    """Every browser test's page also checks our Content-Security-Policy: a violation on one of our pages (a script
    or style the policy blocks) fails the test. Frame refusals are left out: widget tests provoke them on purpose."""
    violations: list[str] = []

    def watch(message) -> None:
        text = message.text
        if "Content Security Policy" in text and "frame-ancestors" not in text:
            violations.append(text)

    context.on("console", watch)
    yield context
    assert not violations, "Content-Security-Policy violations:\n" + "\n".join(violations)
