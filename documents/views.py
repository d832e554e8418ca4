"""Dashboard pages of the knowledge base. Uploads go from the browser straight to the API (XHR, with upload
progress); the small forms here (text, FAQ, URL, actions) post to these views, which call one service each."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.permissions import workspace_permission_required
from config.errors import ApplicationError
from documents import selectors, services
from documents.models import DocumentSource, DocumentStatus

PAGE_SIZE = 50
CHUNKS_SHOWN = 50
CHUNKS_BEFORE_CITED = 3  # context above a cited passage past the first page of chunks


def _row(document: Any) -> dict[str, Any]:
    return {
        "document": document,
        "note": selectors.document_state_note(document),
        "progress": services.document_progress_overall(
            stage=document.stage, stage_progress=document.stage_progress, status=document.status
        ),
    }


def _error_message(error: ApplicationError) -> str:
    help_text = selectors.ERROR_HELP.get(error.code)
    return error.message if not help_text or help_text == error.message else f"{error.message} {help_text}"


def _action(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """POST-only dashboard actions: an ApplicationError becomes a plain-words message and a redirect back."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except ApplicationError as error:
            if error.status_code == 404:
                raise
            messages.error(request, _error_message(error))
            fallback = reverse("knowledge-detail", args=[kwargs["document_id"]]) if "document_id" in kwargs else None
            return redirect(fallback or reverse("knowledge"))

    return wrapped


@workspace_permission_required("knowledge.view")
def knowledge_index(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()[:200]
    status = request.GET.get("status", "")
    status = status if status in DocumentStatus.values else ""
    page = Paginator(selectors.document_list(search=search or None, status=status or None), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    counts = selectors.document_status_counts()
    return render(request, "documents/knowledge.html", {
        "rows": [_row(document) for document in page.object_list],
        "page": page,
        "search": search,
        "status": status,
        "counts": counts,
        "usage": selectors.document_usage(),
        "status_chips": [(value, label, counts[value]) for value, label in DocumentStatus.choices],
        "max_mb": services.max_upload_bytes() // (1024 * 1024),
        # "Add to knowledge base" from analytics' unanswered questions opens the FAQ form with the question typed in.
        "faq_prefill": request.GET.get("faq_question", "").strip()[:1000],
    })


@workspace_permission_required("knowledge.view")
def knowledge_detail(request: HttpRequest, document_id: int) -> HttpResponse:
    document = selectors.document_get(document_id=document_id)
    # ?chunk=N (a citation's dashboard_url): the passage is on the page, highlighted, wherever it is in the document.
    cited = request.GET.get("chunk", "")
    cited_ordinal = int(cited) if cited.isascii() and cited.isdigit() and len(cited) <= 9 else None
    offset = cited_ordinal - CHUNKS_BEFORE_CITED if cited_ordinal and cited_ordinal >= CHUNKS_SHOWN else 0
    chunks = list(selectors.document_chunks(document=document, limit=CHUNKS_SHOWN, offset=offset))
    if offset and not chunks:  # the document was chunked differently since: its beginning
        offset, chunks = 0, list(selectors.document_chunks(document=document, limit=CHUNKS_SHOWN))
    return render(request, "documents/detail.html", {
        **_row(document),
        "chunks": chunks,
        "chunks_offset": offset,
        "cited_ordinal": cited_ordinal,
        "is_url": document.source in (DocumentSource.URL, DocumentSource.CRAWL),
    })


@workspace_permission_required("knowledge.view")
def knowledge_failed(request: HttpRequest) -> HttpResponse:
    page = Paginator(selectors.document_failed_list(), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "documents/failed.html", {"rows": [_row(d) for d in page.object_list], "page": page})


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_add_text(request: HttpRequest) -> HttpResponse:
    document = services.document_create_text(
        title=request.POST.get("title", ""), text=request.POST.get("text", ""),
        markdown=request.POST.get("format") == "markdown", uploaded_by=request.user,
    )
    messages.success(request, f"“{document.title}” was added and is being processed.")
    return redirect("knowledge-detail", document_id=document.pk)


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_add_faq(request: HttpRequest) -> HttpResponse:
    document = services.document_create_faq(
        question=request.POST.get("question", ""), answer=request.POST.get("answer", ""), uploaded_by=request.user
    )
    messages.success(request, "The FAQ entry was added and is being processed.")
    return redirect("knowledge-detail", document_id=document.pk)


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_import_url(request: HttpRequest) -> HttpResponse:
    document = services.document_import_url(
        url=request.POST.get("url", ""), title=request.POST.get("title") or None, uploaded_by=request.user
    )
    messages.success(request, "The page is being fetched.")
    return redirect("knowledge-detail", document_id=document.pk)


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_reindex_all(request: HttpRequest) -> HttpResponse:
    count = services.workspace_reindex(actor=request.user)
    messages.success(request, f"{count} documents are being reindexed.")
    return redirect("knowledge")


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_delete(request: HttpRequest, document_id: int) -> HttpResponse:
    document = selectors.document_get(document_id=document_id)
    services.document_delete(document=document, actor=request.user)
    messages.success(request, f"“{document.title}” was deleted.")
    return redirect("knowledge")


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_retry(request: HttpRequest, document_id: int) -> HttpResponse:
    document = services.document_retry(document=selectors.document_get(document_id=document_id), actor=request.user)
    messages.success(request, f"“{document.title}” is queued again.")
    if request.POST.get("next") == "failed":
        return redirect("knowledge-failed")
    return redirect("knowledge-detail", document_id=document.pk)


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_reindex(request: HttpRequest, document_id: int) -> HttpResponse:
    document = services.document_reindex(document=selectors.document_get(document_id=document_id),
                                         actor=request.user)
    messages.success(request, f"“{document.title}” is being reindexed.")
    return redirect("knowledge-detail", document_id=document.pk)


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_new_version(request: HttpRequest, document_id: int) -> HttpResponse:
    document = selectors.document_get(document_id=document_id)
    uploaded = request.FILES.get("file")
    if uploaded is None:
        messages.error(request, "Choose a file for the new version.")
        return redirect("knowledge-detail", document_id=document.pk)
    document = services.document_new_version(document=document, uploaded_file=uploaded, uploaded_by=request.user)
    messages.success(request, f"Version {document.version} of “{document.title}” is being processed.")
    return redirect("knowledge-detail", document_id=document.pk)


# --- website sources ---------------------------------------------------------------------------------------------


def _source_action(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Like _action, back to the source's page (or the list) with the error in plain words."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except ApplicationError as error:
            if error.status_code == 404:
                raise
            messages.error(request, _error_message(error))
            if "source_id" in kwargs:
                return redirect("source-detail", source_id=kwargs["source_id"])
            return redirect("sources")

    return wrapped


def _lines(value: str) -> list[str]:
    return [line.strip() for line in (value or "").splitlines() if line.strip()]


@workspace_permission_required("knowledge.view")
def sources_index(request: HttpRequest) -> HttpResponse:
    rows = [{"source": source, "run": selectors.source_last_run(source=source)} for source in selectors.source_list()]
    return render(request, "documents/sources.html", {
        "rows": [{**row, "note": selectors.source_run_note(row["run"]) if row["run"] else ""} for row in rows],
    })


@workspace_permission_required("knowledge.manage")
@require_POST
@_source_action
def source_add(request: HttpRequest) -> HttpResponse:
    from documents import sources

    source = sources.source_create(
        url=request.POST.get("url", ""), sitemap=request.POST.get("kind") == "sitemap",
        max_pages=request.POST.get("max_pages") or None, max_depth=request.POST.get("max_depth") or None,
        include=_lines(request.POST.get("include", "")), exclude=_lines(request.POST.get("exclude", "")),
        schedule=request.POST.get("schedule") or "off", created_by=request.user)
    messages.success(request, f"{source.url} was added; its crawl has started.")
    return redirect("source-detail", source_id=source.pk)


@workspace_permission_required("knowledge.view")
def source_detail(request: HttpRequest, source_id: int) -> HttpResponse:
    source = selectors.source_get(source_id=source_id)
    run = selectors.source_last_run(source=source)
    report = list(selectors.source_run_pages(run=run)[:500]) if run else []
    return render(request, "documents/source_detail.html", {
        "source": source, "run": run, "note": selectors.source_run_note(run) if run else "",
        "pending": run.pages.filter(state="pending").count() if run else 0,
        "report": report, "runs": list(selectors.source_runs(source=source)[:10]),
        "report_truncated": run is not None and run.pages.filter(is_sitemap=False).count() > len(report),
    })


@workspace_permission_required("knowledge.manage")
@require_POST
@_source_action
def source_settings(request: HttpRequest, source_id: int) -> HttpResponse:
    from documents import sources

    sources.source_update(
        source=selectors.source_get(source_id=source_id), actor=request.user,
        schedule=request.POST.get("schedule") or None, max_pages=request.POST.get("max_pages") or None,
        max_depth=request.POST.get("max_depth") or None,
        include=_lines(request.POST.get("include", "")) if "include" in request.POST else None,
        exclude=_lines(request.POST.get("exclude", "")) if "exclude" in request.POST else None)
    messages.success(request, "Saved; the next run uses these settings.")
    return redirect("source-detail", source_id=source_id)


@workspace_permission_required("knowledge.manage")
@require_POST
@_source_action
def source_sync_now(request: HttpRequest, source_id: int) -> HttpResponse:
    from documents import sources

    sources.source_sync(source=selectors.source_get(source_id=source_id), actor=request.user)
    messages.success(request, "The re-sync has started.")
    return redirect("source-detail", source_id=source_id)


@workspace_permission_required("knowledge.manage")
@require_POST
@_source_action
def source_cancel(request: HttpRequest, source_id: int) -> HttpResponse:
    from documents import sources

    source = selectors.source_get(source_id=source_id)
    run = selectors.source_last_run(source=source)
    if run is None:
        messages.error(request, "This website has no run to cancel.")
    else:
        sources.source_run_cancel(run=run, actor=request.user)
        messages.success(request, "The run stops after the page in hand.")
    return redirect("source-detail", source_id=source_id)


@workspace_permission_required("knowledge.manage")
@require_POST
@_source_action
def source_resume(request: HttpRequest, source_id: int) -> HttpResponse:
    from documents import sources

    source = selectors.source_get(source_id=source_id)
    run = selectors.source_last_run(source=source)
    if run is None:
        messages.error(request, "This website has no run to resume.")
    else:
        sources.source_run_resume(run=run, actor=request.user)
        messages.success(request, "The run continues where it stopped.")
    return redirect("source-detail", source_id=source_id)


@workspace_permission_required("knowledge.manage")
@require_POST
@_source_action
def source_remove(request: HttpRequest, source_id: int) -> HttpResponse:
    from documents import sources

    source = selectors.source_get(source_id=source_id)
    removed = sources.source_delete(source=source, actor=request.user)
    messages.success(request, f"{source.url} and its {removed} page{'s' if removed != 1 else ''} were removed.")
    return redirect("sources")
