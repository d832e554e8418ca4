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
    from chat.retrieval import knowledge_retrieve

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
    # A byte more is a change: re-indexed in place.
    site.put("/only.html", site.pages["/only.html"][0] + b"\n")
    run = run_wait(ws, sync(ws, source).pk, crawl_worker)
    assert (run.unchanged, run.changed, run.indexed) == (0, 1, 1)
    assert crawled_documents(ws)["/only.html"].version == document.version + 1


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
