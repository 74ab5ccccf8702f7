"""The Flask app's routes (flask_app.py), as Django views. Forms are posted without a CSRF
token: the project has no CsrfViewMiddleware."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.views.decorators.http import require_POST, require_safe


@require_safe
def json_items(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"items": list(range(20)), "name": "prefork", "nested": {"ok": True}})


@require_POST
def form(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"form": {key: request.POST.getlist(key) for key in sorted(request.POST)}})


@require_POST
def upload(request: HttpRequest) -> JsonResponse:
    files = {
        key: [f.name, f.content_type, hashlib.sha256(f.read()).hexdigest()]
        for key, f in sorted(request.FILES.items())
    }
    return JsonResponse({"files": files, "form": dict(sorted(request.POST.items()))})


@require_safe
def stream(request: HttpRequest) -> StreamingHttpResponse:
    def lines() -> Iterator[str]:
        for i in range(5):
            yield f"line {i}\n"

    return StreamingHttpResponse(lines(), content_type="text/plain")


def go(request: HttpRequest) -> HttpResponseRedirect:
    return HttpResponseRedirect("/json")


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the app raises")


@require_POST
def echo(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.body, content_type="application/octet-stream")


def query(request: HttpRequest) -> JsonResponse:
    args = {key: request.GET.getlist(key) for key in sorted(request.GET)}
    return JsonResponse({"args": args, "raw": request.META["QUERY_STRING"]})


def non_ascii(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"path": request.path})


def cookie(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"cookies": dict(sorted(request.COOKIES.items()))})


def set_cookies(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("cookies set", content_type="text/plain")
    response.set_cookie("a", "1")
    response.set_cookie("b", "two words", path="/x", httponly=True)
    response.set_cookie("c", "3", samesite="Lax")
    return response
