"""Websites as sources against real sites on loopback and a real Celery worker: a link crawl (depth, include/exclude,
robots.txt), a sitemap crawl (index and gzip), a re-sync (one page changed, one new, one gone, the rest unchanged and
not re-embedded), citations that link to the page's heading, cancel and resume, the plan limit, and a crawl whose
worker is killed mid-run and that completes on another worker."""
from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from documents import selectors, sources
from documents.models import Chunk, Document, PageState, Source, SourcePage, SourceRun, SourceRunPage
from documents.vectors import vectors_count
from tests.documents.test_pipeline import dedicated_worker, word_marker, workspace_schema
from tests.documents.website import Website, page
from tests.factories import WorkspaceWithOwner, workspace_with_owner
from tests.live import ManagedProcess

HUNG_AFTER_SECONDS = 180  # a liveness bound: a run still going after this is hung


@pytest.fixture(scope="module")
def crawl_queue() -> str:
    return f"crawl_{secrets.token_hex(3)}"


def worker_env(queue: str) -> dict[str, str]:
    return {"URL_IMPORT_ALLOWED_NETWORKS": "127.0.0.1/32", "SOURCE_DELAY": "0", "SOURCE_QUEUE": queue,
            "SOURCE_SLICE_SECONDS": "3", "DOCUMENT_URL_TIMEOUT": "30"}


@pytest.fixture(scope="module")
def crawl_worker(django_db_blocker, crawl_queue) -> Iterator[ManagedProcess]:
    """A worker of this module's own that may fetch from loopback (URL_IMPORT_ALLOWED_NETWORKS), without delays."""
    with django_db_blocker.unblock(), dedicated_worker("crawl-worker", crawl_queue, **worker_env(crawl_queue)) as worker:
        yield worker


@pytest.fixture(autouse=True)
def _loopback_allowed(settings, crawl_queue) -> None:
    settings.URL_IMPORT_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.SOURCE_QUEUE = crawl_queue


@pytest.fixture
def ws(django_db_blocker) -> WorkspaceWithOwner:
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Crawl Co")


@pytest.fixture
def site() -> Iterator[Website]:
    website = Website()
    yield website
    website.close()


def run_wait(ws: WorkspaceWithOwner, run_id: int, worker: ManagedProcess | None = None) -> SourceRun:
    deadline = time.monotonic() + HUNG_AFTER_SECONDS
    while True:
        with workspace_schema(ws.workspace):
            run = SourceRun.objects.get(pk=run_id)
        if run.status not in ("queued", "running", "cancelling"):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} hung: {run.status}, {run.fetched} fetched\n"
                                 f"{worker.log_tail() if worker else ''}")
        time.sleep(0.1)


def run_pages(ws: WorkspaceWithOwner, run_id: int) -> dict[str, tuple[str, str, str]]:
    """path → (state, outcome, reason code) of every URL the run found."""
    with workspace_schema(ws.workspace):
        rows = SourceRunPage.objects.filter(run_id=run_id, is_sitemap=False)
        return {"/" + row.url.split("/", 3)[3]: (row.state, row.outcome, row.reason_code) for row in rows}


def crawl(ws: WorkspaceWithOwner, url: str, **options: Any) -> tuple[Source, SourceRun]:
    with workspace_schema(ws.workspace):
        source = sources.source_create(url=url, created_by=ws.owner, **options)
        run = source.runs.get()
    return source, run


def sync(ws: WorkspaceWithOwner, source: Source) -> SourceRun:
    with workspace_schema(ws.workspace):
        return sources.source_sync(source=Source.objects.get(pk=source.pk))


def crawled_documents(ws: WorkspaceWithOwner) -> dict[str, Document]:
    with workspace_schema(ws.workspace):
        return {"/" + d.source_url.split("/", 3)[3]: d for d in Document.objects.filter(source="crawl")}


# --- a link crawl ----------------------------------------------------------------------------------------------------


def link_site(site: Website, marker: str) -> None:
    site.put("/robots.txt", "User-agent: *\nDisallow: /private/\n", "text/plain")
    site.put("/", page("Acme help", ("welcome", "Welcome", f"Help for Acme products {marker}."),
                       links=["/docs/returns.html", "/docs/shipping.html#rates", "/private/secret.html",
                              "/blog/news.html", "https://elsewhere.example/", "mailto:help@acme.test",
                              "/logo.png", "/docs/deep/1.html"]))
    site.put("/docs/returns.html", page("Returns", ("return-window", "Return window",
                                                     f"Items can be returned within {marker} thirty days."),
                                        ("refunds", "Refunds", "Refunds reach your card within five days.")))
    site.put("/docs/shipping.html", page("Shipping", ("rates", "Rates", "Shipping costs four euros per parcel."),
                                         links=["/docs/returns.html", "/"]))
    site.put("/private/secret.html", page("Secret", ("s", "Secret", "Nobody should index this.")))
    site.put("/blog/news.html", page("News", ("n", "News", "Blog posts are excluded.")))
    for level in range(1, 5):
        site.put(f"/docs/deep/{level}.html", page(f"Deep {level}", ("d", f"Level {level}", f"Depth {level} text."),
                                                   links=[f"/docs/deep/{level + 1}.html"]))


def test_link_crawl_follows_same_site_links_within_depth_patterns_and_robots(ws, site, crawl_worker):
    marker = word_marker("zc")
    link_site(site, marker)
    source, run = crawl(ws, site.url("/"), max_depth=2, exclude=["/blog/*"])
    run = run_wait(ws, run.pk, crawl_worker)
    assert run.status == "completed", (run.stop_code, run.stop_message, crawl_worker.log_tail())
    pages = run_pages(ws, run.pk)
    assert pages["/"][:2] == ("indexed", "added")
    assert pages["/docs/returns.html"][:2] == ("indexed", "added")
    assert pages["/docs/shipping.html"][:2] == ("indexed", "added")  # the fragment is not another page
    assert pages["/docs/deep/1.html"][:2] == ("indexed", "added")  # depth 1
    assert pages["/docs/deep/2.html"][:2] == ("indexed", "added")  # depth 2
    assert pages["/docs/deep/3.html"] == ("skipped", "", "max_depth")
    assert pages["/private/secret.html"] == ("skipped", "", "robots_txt")
    assert pages["/blog/news.html"] == ("skipped", "", "excluded")
    assert pages["/logo.png"] == ("skipped", "", "not_a_page")
    assert not any("elsewhere" in url or "mailto" in url for url in pages)
    assert site.hits("/private/secret.html") == [] and site.hits("/blog/news.html") == []
    assert site.hits("/docs/deep/3.html") == [] and site.hits("/logo.png") == []
    assert (run.discovered, run.fetched, run.indexed, run.added, run.skipped, run.failed) == (9, 5, 5, 5, 4, 0)

    documents = crawled_documents(ws)
    assert set(documents) == {"/", "/docs/returns.html", "/docs/shipping.html", "/docs/deep/1.html",
                              "/docs/deep/2.html"}
    assert all(d.status == "indexed" and d.chunk_count > 0 for d in documents.values())
    returns = documents["/docs/returns.html"]
    assert returns.title == "Returns"
    assert vectors_count(schema_name=ws.workspace.schema_name, document_id=returns.pk) == returns.chunk_count
    with workspace_schema(ws.workspace):
        hit = selectors.chunk_fulltext_search(query=marker + " thirty", limit=5)[0]
        chunk = Chunk.objects.select_related("document").get(pk=hit.chunk_id)
        assert chunk.document_id == returns.pk
        # The citation links to the page, at the heading its text sits under.
        assert selectors.chunk_source_url(document=chunk.document, chunk=chunk) == \
            site.url("/docs/returns.html#return-window")
        assert SourcePage.objects.filter(source=source).count() == 5


def test_sitemap_crawl_reads_an_index_of_plain_and_gzip_sitemaps_and_follows_no_links(ws, site, crawl_worker):
    site.put("/robots.txt", "User-agent: *\nDisallow: /hidden/\n", "text/plain")
    site.put_sitemap("/sitemap_index.xml", ["/sitemap-a.xml", "/sitemap-b.xml.gz"], index=True)
    site.put_sitemap("/sitemap-a.xml", ["/a/one.html", "/a/two.html", "/hidden/three.html"])
    site.put_sitemap("/sitemap-b.xml.gz", ["/b/four.html", "/b/missing.html"], gzipped=True)
    for name in ("a/one", "a/two", "hidden/three", "b/four"):
        site.put(f"/{name}.html", page(name.title(), ("x", name, f"The page {name} {word_marker('zs')}."),
                                       links=["/not-in-sitemap.html"]))
    site.put("/not-in-sitemap.html", page("Linked only", ("y", "Linked", "Only linked.")))
    _source, run = crawl(ws, site.url("/sitemap_index.xml"), sitemap=True)
    run = run_wait(ws, run.pk, crawl_worker)
    assert run.status == "completed", (run.stop_code, run.stop_message)
    pages = run_pages(ws, run.pk)
    assert pages == {
        "/a/one.html": ("indexed", "added", ""), "/a/two.html": ("indexed", "added", ""),
        "/b/four.html": ("indexed", "added", ""), "/hidden/three.html": ("skipped", "", "robots_txt"),
        "/b/missing.html": ("failed", "", "url_unreachable"),
    }
    assert site.hits("/not-in-sitemap.html") == []
    assert set(crawled_documents(ws)) == {"/a/one.html", "/a/two.html", "/b/four.html"}
    with workspace_schema(ws.workspace):
        reason = SourceRunPage.objects.get(run=run, url=site.url("/b/missing.html")).reason
    assert "404" in reason


# --- re-sync -----------------------------------------------------------------------------------------------------------


def test_resync_finds_one_changed_one_new_one_gone_and_leaves_the_rest_alone(ws, site, crawl_worker):
    from documents.retrieval import knowledge_retrieve

    names = [f"/kb/page-{n}.html" for n in range(8)]
    for n, path in enumerate(names):
        site.put(path, page(f"Topic {n}", ("body", f"Topic {n}", f"Topic {n} is about {word_marker('zr')}.")))
    site.put("/kb/warranty.html", page("Warranty", ("length", "Warranty length",
                                                    "The warranty of the kettle lasts two years from purchase.")))
    site.put_sitemap("/sitemap.xml", [*names, "/kb/warranty.html"])
    source, run = crawl(ws, site.url("/sitemap.xml"), sitemap=True)
    run = run_wait(ws, run.pk, crawl_worker)
    assert (run.status, run.indexed, run.added) == ("completed", 9, 9)
    before = crawled_documents(ws)
    with workspace_schema(ws.workspace):
        chunk_ids = {path: list(Chunk.objects.filter(document=d).values_list("id", "text")) for path, d in before.items()}

    # One page changes, one is added, one disappears.
    site.put("/kb/warranty.html", page("Warranty", ("length", "Warranty length",
                                                    "The warranty of the kettle lasts five years from purchase.")))
    site.put("/kb/new.html", page("Descaling", ("descale", "Descaling", "Descale the kettle with citric acid.")))
    site.remove(names[0])
    site.put_sitemap("/sitemap.xml", [*names, "/kb/warranty.html", "/kb/new.html"])
    requests_before = len(site.requests)
    run = run_wait(ws, sync(ws, source).pk, crawl_worker)
    assert run.status == "completed", (run.stop_code, run.stop_message)
    assert (run.changed, run.added, run.unchanged, run.removed, run.failed) == (1, 1, 7, 0, 1)
    pages = run_pages(ws, run.pk)
    assert pages["/kb/warranty.html"][:2] == ("indexed", "changed")
    assert pages["/kb/new.html"][:2] == ("indexed", "added")
    assert pages[names[0]] == ("failed", "gone_once", "gone_once")  # first 404: kept, for now
    assert all(pages[path] == ("unchanged", "unchanged", "") for path in names[1:])
    # Unchanged pages answered 304 to a conditional GET: not downloaded, parsed or embedded again.
    answers = dict(site.requests[requests_before:])
    assert all(answers[path] == 304 for path in names[1:])
    after = crawled_documents(ws)
    for path in names[1:]:
        assert (after[path].version, after[path].indexed_at, after[path].sha256) == \
            (before[path].version, before[path].indexed_at, before[path].sha256)
    with workspace_schema(ws.workspace):
        for path in names[1:]:
            assert list(Chunk.objects.filter(document=after[path]).values_list("id", "text")) == chunk_ids[path]
    # The changed page kept its document (same id, next version): re-indexed in place.
    warranty = after["/kb/warranty.html"]
    assert warranty.pk == before["/kb/warranty.html"].pk and warranty.version == 2
    with workspace_schema(ws.workspace):
        reason = SourceRunPage.objects.get(run=run, url=site.url("/kb/warranty.html")).reason
    assert reason == f"{warranty.chunk_count} of {warranty.chunk_count} passages embedded."  # its one passage changed
    assert vectors_count(schema_name=ws.workspace.schema_name, document_id=warranty.pk) == warranty.chunk_count
    assert names[0] in after  # one 404 is not enough to remove a page

    # The answer follows the change.
    connection.set_tenant(ws.workspace)
    try:
        top = knowledge_retrieve(query="How long does the kettle warranty last?").chunks[0]
        assert top.document_id == warranty.pk and "five years" in top.text and "two years" not in top.text
        assert top.citation()["url"] == site.url("/kb/warranty.html#length")
    finally:
        connection.set_schema_to_public()

    # Gone twice in a row: removed, with its vectors.
    gone_id = after[names[0]].pk
    run = run_wait(ws, sync(ws, source).pk, crawl_worker)
    assert (run.status, run.removed, run.unchanged, run.changed, run.added) == ("completed", 1, 9, 0, 0)
    assert run_pages(ws, run.pk)[names[0]] == ("removed", "removed", "gone")
    assert names[0] not in crawled_documents(ws)
    assert vectors_count(schema_name=ws.workspace.schema_name, document_id=gone_id) == 0
    with workspace_schema(ws.workspace):
        assert not SourcePage.objects.filter(source=source, url=site.url(names[0])).exists()
        assert Source.objects.get(pk=source.pk).last_synced_at is not None


def test_a_page_fetched_again_with_the_same_bytes_is_unchanged_by_its_hash(ws, site, crawl_worker):
    site.put("/only.html", page("Only", ("o", "Only", "The one page of this site.")))
    site.put_sitemap("/sitemap.xml", ["/only.html"])
    source, run = crawl(ws, site.url("/sitemap.xml"), sitemap=True)
    assert run_wait(ws, run.pk, crawl_worker).indexed == 1
    document = crawled_documents(ws)["/only.html"]
    # As if the server had dropped its validators: no conditional GET is possible, the full page comes back.
    with workspace_schema(ws.workspace):
        SourcePage.objects.filter(source=source).update(etag="", last_modified="")
    requests_before = len(site.requests)
    run = run_wait(ws, sync(ws, source).pk, crawl_worker)
    assert (run.unchanged, run.changed, run.indexed) == (1, 0, 0)
    assert dict(site.requests[requests_before:])["/only.html"] == 200
    again = crawled_documents(ws)["/only.html"]
    assert (again.version, again.indexed_at) == (document.version, document.indexed_at)
    # A byte more is a change: re-indexed in place; its passages are the same, so none is embedded again.
    site.put("/only.html", site.pages["/only.html"][0] + b"\n")
    run = run_wait(ws, sync(ws, source).pk, crawl_worker)
    assert (run.unchanged, run.changed, run.indexed) == (0, 1, 1)
    again = crawled_documents(ws)["/only.html"]
    assert again.version == document.version + 1
    with workspace_schema(ws.workspace):
        assert SourceRunPage.objects.get(run=run, url=site.url("/only.html")).reason == \
            f"0 of {again.chunk_count} passages embedded (the others were unchanged)."
    assert vectors_count(schema_name=ws.workspace.schema_name, document_id=again.pk) == again.chunk_count


# --- control: cancel, resume, limits, a worker restart ----------------------------------------------------------------


def test_cancel_stops_a_running_crawl_and_resume_finishes_it(ws, site, crawl_worker):
    names = [f"/c/{n}.html" for n in range(6)]
    for n, path in enumerate(names):
        site.put(path, page(f"Cancel {n}", ("c", f"Cancel {n}", f"Cancel page {n} {word_marker('zx')}.")))
    site.put_sitemap("/sitemap.xml", names)
    gate, reached = site.hold(names[2])
    _source, run = crawl(ws, site.url("/sitemap.xml"), sitemap=True)
    assert reached.wait(HUNG_AFTER_SECONDS), crawl_worker.log_tail()
    with workspace_schema(ws.workspace):
        assert sources.source_run_cancel(run=SourceRun.objects.get(pk=run.pk)).status == "cancelling"
    gate.set()
    run = run_wait(ws, run.pk, crawl_worker)
    assert run.status == "cancelled" and run.stop_code == "cancelled"
    with workspace_schema(ws.workspace):
        pending = SourceRunPage.objects.filter(run=run, state=PageState.PENDING).count()
    assert pending > 0 and run.indexed + pending == 6
    with workspace_schema(ws.workspace):
        assert sources.source_run_resume(run=run).status == "queued"
    run = run_wait(ws, run.pk, crawl_worker)
    assert (run.status, run.indexed) == ("completed", 6)
    assert set(crawled_documents(ws)) == set(names)
    assert all(len(site.hits(path)) == 1 for path in names)  # nothing fetched twice


def test_a_second_run_while_one_is_going_is_refused_with_source_busy(ws, site, crawl_worker):
    site.put("/p.html", page("P", ("p", "P", "Busy page.")))
    site.put_sitemap("/sitemap.xml", ["/p.html"])
    gate, reached = site.hold("/p.html")
    source, run = crawl(ws, site.url("/sitemap.xml"), sitemap=True)
    assert reached.wait(HUNG_AFTER_SECONDS)
    from config.errors import Conflict

    with pytest.raises(Conflict) as refused:
        sync(ws, source)
    assert refused.value.code == "source_busy" and refused.value.details["run_id"] == run.pk
    gate.set()
    assert run_wait(ws, run.pk, crawl_worker).status == "completed"


def test_a_crawl_that_would_pass_the_plan_limit_stops_with_the_reason(django_db_blocker, site, crawl_worker):
    from tests.tenants.test_billing import plan_make, workspace_on

    with django_db_blocker.unblock():
        ws = workspace_on(plan_make(max_documents=3, max_storage_bytes=None).code)
    names = [f"/l/{n}.html" for n in range(5)]
    for n, path in enumerate(names):
        site.put(path, page(f"Limit {n}", ("l", f"Limit {n}", f"Limit page {n} {word_marker('zl')}.")))
    site.put_sitemap("/sitemap.xml", names)
    _source, run = crawl(ws, site.url("/sitemap.xml"), sitemap=True)
    run = run_wait(ws, run.pk, crawl_worker)
    assert run.status == "stopped" and run.stop_code == "plan_limit", run.stop_message
    assert "plan" in run.stop_message.lower() and run.indexed == 3
    assert len(crawled_documents(ws)) == 3
    states = sorted(state for state, _outcome, _code in run_pages(ws, run.pk).values())
    assert states == ["indexed", "indexed", "indexed", "pending", "skipped"]


def test_a_crawl_interrupted_by_a_worker_restart_completes_from_its_frontier(ws, site, django_db_blocker, settings):
    crawl_queue = settings.SOURCE_QUEUE = f"crawl_restart_{secrets.token_hex(3)}"  # no other worker takes it
    names = [f"/r/{n}.html" for n in range(8)]
    for n, path in enumerate(names):
        site.put(path, page(f"Restart {n}", ("r", f"Restart {n}", f"Restart page {n} {word_marker('zk')}.")))
    site.put_sitemap("/sitemap.xml", names)
    gate, reached = site.hold(names[4])
    with django_db_blocker.unblock(), dedicated_worker("crawl-doomed", crawl_queue, **worker_env(crawl_queue)) as doomed:
        _source, run = crawl(ws, site.url("/sitemap.xml"), sitemap=True)
        assert reached.wait(HUNG_AFTER_SECONDS), doomed.log_tail()
        doomed.proc.send_signal(signal.SIGKILL)  # mid-page: its message is never acknowledged
        doomed.proc.wait(timeout=30)
    gate.set()
    with workspace_schema(ws.workspace):
        done_before = SourceRunPage.objects.filter(run_id=run.pk).exclude(state=PageState.PENDING).count()
        assert SourceRun.objects.get(pk=run.pk).status == "running" and done_before < 9
    with django_db_blocker.unblock(), dedicated_worker("crawl-fresh", crawl_queue, **worker_env(crawl_queue)) as fresh:
        # What beat does every few minutes (documents.sources_sync_due_all): a run with no heartbeat is sent again.
        with workspace_schema(ws.workspace):
            assert sources.source_runs_stalled_resume(older_than=0) == [run.pk]
        run = run_wait(ws, run.pk, fresh)
    assert (run.status, run.indexed, run.added, run.failed) == ("completed", 8, 8, 0), run.stop_message
    documents = crawled_documents(ws)
    assert set(documents) == set(names)
    assert all(vectors_count(schema_name=ws.workspace.schema_name, document_id=d.pk) == d.chunk_count
               for d in documents.values())
    # Pages handled before the kill were not fetched again.
    assert all(len(site.hits(path)) == 1 for path in names[:4])


# --- REST, commands, schedule, live events, export -------------------------------------------------------------------


def small_site(site: Website, count: int = 3, prefix: str = "/s") -> list[str]:
    names = [f"{prefix}/{n}.html" for n in range(count)]
    for n, path in enumerate(names):
        site.put(path, page(f"Page {n}", ("p", f"Page {n}", f"Page {n} of the site {word_marker('zp')}.")))
    site.put_sitemap("/sitemap.xml", names)
    return names


def test_sources_api_creates_reports_and_refuses_bad_input(ws, site, crawl_worker, host_client, role_users):
    names = small_site(site)
    client = host_client(ws.host)
    client.force_login(ws.owner)
    created = client.post("/api/v1/sources/", {"url": site.url("/sitemap.xml"), "sitemap": True, "max_pages": 10,
                                               "exclude": ["/private/*"], "schedule": "weekly"},
                          content_type="application/json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["kind"] == "sitemap" and body["schedule"] == "weekly" and body["next_sync_at"]
    assert body["exclude"] == ["/private/*"] and body["last_run"]["status"] in ("queued", "running", "completed")
    source_id, run_id = body["id"], body["last_run"]["id"]
    run_wait(ws, run_id, crawl_worker)
    detail = client.get(f"/api/v1/sources/{source_id}/").json()
    assert detail["page_count"] == 3 and detail["last_synced_at"]
    assert {k: detail["last_run"][k] for k in ("status", "indexed", "added", "failed", "pending")} == \
        {"status": "completed", "indexed": 3, "added": 3, "failed": 0, "pending": 0}
    assert detail["last_run"]["note"] == "Finished."
    report = client.get(f"/api/v1/sources/{source_id}/runs/{run_id}/pages/").json()
    assert sorted(row["url"] for row in report["results"]) == sorted(site.url(n) for n in names)
    assert client.get(f"/api/v1/sources/{source_id}/runs/{run_id}/pages/?state=failed").json()["count"] == 0
    assert client.get("/api/v1/sources/").json()["count"] == 1

    synced = client.post(f"/api/v1/sources/{source_id}/sync/")
    assert synced.status_code == 202 and synced.json()["kind"] == "sync"
    again = client.post(f"/api/v1/sources/{source_id}/sync/")
    if again.status_code == 409:  # the first re-sync is still going
        assert again.json()["error"]["code"] == "source_busy"
    run = run_wait(ws, synced.json()["id"], crawl_worker)
    assert (run.unchanged, run.changed) == (3, 0)
    assert client.get(f"/api/v1/sources/{source_id}/runs/").json()["count"] in (2, 3)
    ended = client.post(f"/api/v1/sources/{source_id}/runs/{run.pk}/cancel/")
    assert ended.status_code == 409 and ended.json()["error"]["code"] == "conflict"

    patched = client.patch(f"/api/v1/sources/{source_id}/", {"schedule": "off", "max_pages": 50},
                           content_type="application/json")
    assert patched.status_code == 200 and patched.json()["schedule"] == "off" and patched.json()["next_sync_at"] is None

    for payload, code in [
        ({"url": "ftp://example.com/"}, "url_invalid"),
        ({"url": "not a url"}, "url_invalid"),
        ({"url": "http://10.1.2.3/"}, "url_forbidden"),
        ({"url": site.url("/"), "max_pages": 0}, "invalid"),
        ({"url": site.url("/"), "max_depth": 99}, "invalid"),
        ({"url": site.url("/"), "schedule": "hourly"}, "invalid"),
        ({"url": site.url("/"), "include": "not-a-list"}, "invalid"),
        ({"url": site.url("/"), "exclude": ["x" * 300]}, "invalid"),
    ]:
        refused = client.post("/api/v1/sources/", payload, content_type="application/json")
        assert refused.status_code == 400 and refused.json()["error"]["code"] == code, (payload, refused.content)
    assert client.get("/api/v1/sources/999999/").status_code == 404
    assert client.get(f"/api/v1/sources/{source_id}/runs/999999/pages/").status_code == 404

    viewer = host_client(ws.host)
    viewer.force_login(_member(ws, "viewer"))
    assert viewer.get(f"/api/v1/sources/{source_id}/").status_code == 200
    assert viewer.post(f"/api/v1/sources/{source_id}/sync/").status_code == 403
    assert viewer.delete(f"/api/v1/sources/{source_id}/").status_code == 403

    document_ids = list(crawled_documents(ws).values())
    assert client.delete(f"/api/v1/sources/{source_id}/").status_code == 204
    assert crawled_documents(ws) == {}
    assert all(vectors_count(schema_name=ws.workspace.schema_name, document_id=d.pk) == 0 for d in document_ids)


def _member(ws: WorkspaceWithOwner, role: str) -> Any:
    from tests.factories import member

    return member(ws.workspace, role)


def test_crawl_and_sync_sources_commands_wait_and_print_the_contract(ws, site, crawl_worker, crawl_queue):
    import json
    import subprocess
    import sys

    from tests.live import BASE_DIR, process_env

    names = small_site(site, count=4)
    env = process_env(connection.settings_dict, **worker_env(crawl_queue))

    def manage(*args: str) -> tuple[int, dict[str, Any]]:
        result = subprocess.run([sys.executable, "manage.py", *args, "--json"], cwd=BASE_DIR, env=env,
                                capture_output=True, text=True, timeout=HUNG_AFTER_SECONDS)
        return result.returncode, json.loads(result.stdout or "null") or {"stderr": result.stderr[-2000:]}

    code, crawled = manage("crawl", "--workspace", ws.workspace.slug, site.url("/sitemap.xml"), "--sitemap",
                           "--max-pages", "3", "--every", "daily", "--wait", "--timeout", str(HUNG_AFTER_SECONDS))
    assert code == 0, crawled
    assert {"source_id", "pages", "indexed", "unchanged", "failed", "skipped", "seconds"} <= set(crawled)
    assert (crawled["pages"], crawled["indexed"], crawled["unchanged"], crawled["failed"], crawled["skipped"]) == \
        (3, 3, 0, 0, 1)  # max pages 3: the fourth is skipped
    with workspace_schema(ws.workspace):
        source = Source.objects.get(pk=crawled["source_id"])
        assert source.schedule == "daily" and source.next_sync_at is not None

    site.put(names[1], page("Changed", ("c", "Changed", f"Now different {word_marker('zq')}.")))
    code, synced = manage("sync_sources", "--workspace", ws.workspace.slug, "--wait", "--timeout",
                          str(HUNG_AFTER_SECONDS))
    assert code == 0, synced
    assert {k: synced[k] for k in ("sources", "checked", "changed", "added", "removed", "unchanged", "failed")} == \
        {"sources": 1, "checked": 3, "changed": 1, "added": 0, "removed": 0, "unchanged": 2, "failed": 0}
    assert isinstance(synced["seconds"], float)

    code, refused = manage("crawl", "--workspace", ws.workspace.slug, "http://10.9.9.9/")
    assert code == 1 and refused["error"]["code"] == "url_forbidden"
    code, missing = manage("sync_sources", "--workspace", ws.workspace.slug, "--source", "999999")
    assert code == 1 and missing["error"]["code"] == "not_found"


def test_a_due_schedule_starts_a_resync_and_moves_the_next_one(ws, site, crawl_worker):
    from datetime import timedelta

    from django.utils import timezone

    small_site(site, count=2)
    source, run = crawl(ws, site.url("/sitemap.xml"), sitemap=True, schedule="daily")
    run_wait(ws, run.pk, crawl_worker)
    with workspace_schema(ws.workspace):
        source.refresh_from_db()
        first_next = source.next_sync_at
        assert first_next > timezone.now() + timedelta(hours=23)
        assert sources.sources_sync_due() == []  # not due yet
        started = sources.sources_sync_due(now=first_next + timedelta(seconds=1))
        assert len(started) == 1
    run = run_wait(ws, started[0], crawl_worker)
    assert (run.kind, run.trigger, run.status, run.unchanged) == ("sync", "schedule", "completed", 2)
    with workspace_schema(ws.workspace):
        source.refresh_from_db()
        assert source.next_sync_at > first_next


def test_crawl_progress_is_pushed_live_over_the_websocket(ws, site, crawl_worker, live_server):
    import json

    from tests.documents.test_pipeline import session_cookie

    small_site(site, count=5)
    with live_server.ws_connect(ws.host, "/ws/workspace/events/",
                                additional_headers={"Cookie": session_cookie(ws.owner)}) as socket_:
        _source, run = crawl(ws, site.url("/sitemap.xml"), sitemap=True)
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + HUNG_AFTER_SECONDS
        while time.monotonic() < deadline:
            frame = json.loads(socket_.recv(timeout=60))
            if frame.get("run_id") == run.pk:
                seen.append(frame)
                if frame["type"] == "source.run_finished":
                    break
    assert seen[0]["type"] == "source.run_started" and seen[0]["status"] == "queued"
    assert seen[-1]["type"] == "source.run_finished" and seen[-1]["status"] == "completed"
    assert (seen[-1]["indexed"], seen[-1]["pending"], seen[-1]["discovered"]) == (5, 0, 5)
    assert any(frame["status"] == "running" for frame in seen)
    indexed = [frame["indexed"] for frame in seen]
    assert indexed == sorted(indexed)


def test_export_and_import_carry_the_sources_and_the_imported_copy_resyncs(ws, site, crawl_worker, tmp_path,
                                                                          django_db_blocker):
    import io
    import json

    from django.core.management import call_command

    from tenants.models import Workspace

    small_site(site, count=3)
    source, run = crawl(ws, site.url("/sitemap.xml"), sitemap=True)
    run_wait(ws, run.pk, crawl_worker)
    archive = tmp_path / "crawl.tar.gz"
    out = io.StringIO()
    call_command("export_workspace", "--workspace", ws.workspace.slug, "--output", str(archive), "--json", stdout=out)
    counts = json.loads(out.getvalue())["counts"]
    assert (counts["documents.source"], counts["documents.sourcepage"], counts["documents.sourcerun"]) == (1, 3, 1)
    slug = f"imp-{secrets.token_hex(3)}"
    out = io.StringIO()
    call_command("import_workspace", "--archive", str(archive), "--slug", slug, "--owner-email", ws.owner.email,
                 "--json", stdout=out)
    target = Workspace.objects.get(slug=slug)
    imported = WorkspaceWithOwner(workspace=target, owner=ws.owner)
    with workspace_schema(target):
        copy = Source.objects.get(pk=source.pk)
        assert copy.url == source.url and copy.pages.exclude(document=None).count() == 3
    run = run_wait(imported, sync(imported, copy).pk, crawl_worker)
    assert (run.status, run.unchanged, run.changed, run.added) == ("completed", 3, 0, 0)


def test_dashboard_pages_add_a_website_and_say_what_is_wrong(ws, site, host_client, settings):
    settings.SOURCE_QUEUE = f"crawl_nobody_{secrets.token_hex(3)}"  # no worker: the first run stays queued
    small_site(site, count=1)
    owner = host_client(ws.host)
    owner.force_login(ws.owner)
    refused = owner.post("/knowledge/sources/add/", {"url": "http://10.1.2.3/", "kind": "site"}, follow=True)
    assert refused.status_code == 200 and "private network" in refused.content.decode()
    refused = owner.post("/knowledge/sources/add/", {"url": site.url("/"), "max_pages": "0"}, follow=True)
    assert "max_pages must be between 1 and 10000" in refused.content.decode()
    added = owner.post("/knowledge/sources/add/", {"url": site.url("/sitemap.xml"), "kind": "sitemap",
                                                   "schedule": "daily", "exclude": "/blog/*\n/tmp/*"})
    with workspace_schema(ws.workspace):
        source = Source.objects.get()
    assert added.status_code == 302 and added["Location"] == f"/knowledge/sources/{source.pk}/"
    assert (source.kind, source.schedule, source.exclude) == ("sitemap", "daily", ["/blog/*", "/tmp/*"])
    detail = owner.get(added["Location"]).content.decode()
    assert site.url("/sitemap.xml") in detail and "Waiting for a worker." in detail
    busy = owner.post(f"/knowledge/sources/{source.pk}/sync/", follow=True).content.decode()
    assert "being crawled right now" in busy  # the first run is still queued (no worker on this test's queue)
    viewer = host_client(ws.host)
    viewer.force_login(_member(ws, "viewer"))
    listing = viewer.get("/knowledge/sources/").content.decode()
    assert site.url("/sitemap.xml") in listing and "Add a website" not in listing
    assert viewer.post(f"/knowledge/sources/{source.pk}/sync/").status_code == 403
    saved = owner.post(f"/knowledge/sources/{source.pk}/settings/", {"schedule": "off"})
    assert saved.status_code == 302
    with workspace_schema(ws.workspace):
        assert Source.objects.get().schedule == "off"
    gone = owner.post(f"/knowledge/sources/{source.pk}/delete/")
    assert gone.status_code == 302 and gone["Location"] == "/knowledge/sources/"
    with workspace_schema(ws.workspace):
        assert not Source.objects.exists()


def test_a_page_that_keeps_killing_its_runner_is_left_out_with_the_reason(ws, site, crawl_worker, settings,
                                                                         crawl_queue):
    small_site(site, count=1)
    settings.SOURCE_QUEUE = f"crawl_nobody_{secrets.token_hex(3)}"
    _source, run = crawl(ws, site.url("/sitemap.xml"), sitemap=True)
    with workspace_schema(ws.workspace):
        # As after three runners died on it (each takes the row in hand before any work).
        SourceRunPage.objects.filter(run=run).update(attempts=3)
        settings.SOURCE_QUEUE = crawl_queue
        sources.source_run_send(run_id=run.pk)
    run = run_wait(ws, run.pk, crawl_worker)
    assert (run.status, run.indexed) == ("completed", 0)  # its pages were never found: the sitemap was left out
    with workspace_schema(ws.workspace):
        row = SourceRunPage.objects.get(run=run)
    assert (row.state, row.reason_code) == ("failed", "too_many_attempts") and "3 times" in row.reason
    assert site.hits("/sitemap.xml") == []


def test_a_run_records_a_bounded_number_of_sitemaps_and_addresses(ws, settings, tmp_path):
    """A site can generate sitemap indexes and links without end: a run reads at most SOURCE_MAX_SITEMAPS sitemap
    files (the rest skipped as max_sitemaps) and records at most SOURCE_MAX_ROWS_PER_PAGE addresses per page the
    source may hold, whatever the site sends."""
    from documents.crawler import Robots

    settings.SOURCE_MAX_SITEMAPS = 3
    settings.SOURCE_MAX_ROWS_PER_PAGE = 4
    with workspace_schema(ws.workspace):
        source = Source.objects.create(url="https://bounded.example/", kind="sitemap", max_pages=5)
        run = SourceRun.objects.create(source=source, status="running")
        ctx = sources._Context(run=run, source=source, robots=Robots(), folder=tmp_path)
        sources._frontier_add(ctx, [f"https://bounded.example/sitemap-{n}.xml" for n in range(10)], depth=0,
                              sitemaps=True)
        read = SourceRunPage.objects.filter(run=run, is_sitemap=True).exclude(state=PageState.SKIPPED).count()
        assert read == 3
        assert set(SourceRunPage.objects.filter(run=run, is_sitemap=True, state=PageState.SKIPPED)
                   .values_list("reason_code", flat=True)) == {"max_sitemaps"}
        for batch in range(5):  # every sitemap lists a thousand new pages
            sources._frontier_add(ctx, [f"https://bounded.example/p/{batch}/{n}" for n in range(1000)], depth=1)
        assert SourceRunPage.objects.filter(run=run).count() == 5 * 4
        assert SourceRunPage.objects.filter(run=run, is_sitemap=False).exclude(state=PageState.SKIPPED).count() == 5
