"""The explorer's web face: JSON endpoints over :class:`~cnnlab.explore.session.ExploreSession` and the static
page shipped in ``cnnlab/explore/static``. The OpenAPI schema at ``/openapi.json`` documents the API (FastAPI's
``/docs`` page is off: it loads its scripts from a CDN, and the explorer works offline).

It computes nothing itself: every endpoint is one session call. It serves only its own static files (by a
fixed table of names, never a path from the request), refuses an upload over
:data:`~cnnlab.explore.session.MAX_UPLOAD_BYTES` with 413 before reading it, and answers every error as
``{"error": "..."}`` (400 bad input, 404 an unknown image id or route, 409 a view the run cannot give,
413/415 uploads, 500 ``internal error``): no traceback reaches a response.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnlab.errors import CnnlabError
from cnnlab.explore.session import MAX_UPLOAD_BYTES, ExploreSession, NoGradientsError, NotFoundError
from cnnlab.ops import parse_ints, parse_padding

__all__ = ["create_app", "STATIC_FILES"]

log = logging.getLogger("cnnlab.explore")

#: The static files the page is made of: name -> media type. Nothing else is ever read from disk.
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8"}
_CSP = ("default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _static(name: str) -> bytes:
    return resources.files("cnnlab.explore").joinpath("static", name).read_bytes()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(session: ExploreSession) -> FastAPI:
    """The ASGI app for one opened run."""
    app = FastAPI(title=f"cnnlab explore: {session.path.name}", version="1", docs_url=None, redoc_url=None,
                  description="The views of one trained CNN: inputs, predictions, every layer's maps, receptive "
                              "fields, the convolution step by step, attributions, what it learned, its anatomy.")
    app.state.session = session

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, e: NotFoundError):
        return _error(404, str(e))

    @app.exception_handler(NoGradientsError)
    async def _no_gradients(request: Request, e: NoGradientsError):
        return _error(409, str(e))

    @app.exception_handler(CnnlabError)
    async def _bad(request: Request, e: CnnlabError):
        return _error(400, str(e))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body"))
        return _error(400, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        return _error(e.status_code, str(e.detail) if e.status_code != 404 else "not found")

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        log.error("explore: %s %s failed: %s: %s", request.method, request.url.path, type(e).__name__, e)
        return _error(500, "internal error")

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # ---------------------------------------------------------------------------------------- page
    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return Response(_static("index.html"), media_type=STATIC_FILES["index.html"])

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            return _error(404, "not found")
        return Response(_static(name), media_type=STATIC_FILES[name])

    # ---------------------------------------------------------------------------------------- the run
    @app.get("/api/run", summary="The run: model, classes, input size, which views apply")
    def run() -> dict[str, Any]:
        return session.describe()

    @app.get("/api/anatomy", summary="The summary table and the traced graph (`cnnlab summary`)")
    def anatomy() -> dict[str, Any]:
        return session.anatomy()

    # ---------------------------------------------------------------------------------------- inputs
    @app.post("/api/images", summary="Send an image (the raw file as the body): decoded the run's way, predicted",
              openapi_extra={"requestBody": {"required": True, "content": {"image/*": {"schema": {
                  "type": "string", "format": "binary"}}}}})
    async def add_image(request: Request, kind: str = Query("file", pattern="^(file|drawing)$")) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
            return _error(413, f"an upload of {int(declared):,} bytes is over the limit of {MAX_UPLOAD_BYTES:,}")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media and not (media.startswith("image/") or media == "application/octet-stream"):
            return _error(415, f"content type {media!r} is not an image (send image/png, image/jpeg, ...)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_UPLOAD_BYTES:
                return _error(413, f"an upload over {MAX_UPLOAD_BYTES:,} bytes is over the limit")
        if not body:
            return _error(400, "the request has no image: send the file as the body")
        return session.add_image(bytes(body), kind=kind)

    @app.post("/api/images/test/{index}", summary="Use test image INDEX as the input")
    def add_test_image(index: int) -> dict[str, Any]:
        return session.add_test_image(index)

    @app.get("/api/test-images", summary="Test images to pick from: by class, by confusion cell, or mistakes")
    def test_images(label: int | None = None, predicted: int | None = None, mistakes: bool = False,
                    offset: int = Query(0, ge=0), limit: int = Query(48, ge=1, le=256)) -> dict[str, Any]:
        return session.test_images(label=label, predicted=predicted, mistakes=mistakes, offset=offset, limit=limit)

    # ---------------------------------------------------------------------------------------- views
    @app.get("/api/predict", summary="Class probabilities for an image")
    def predict(image: str) -> dict[str, Any]:
        return {"image": image, "prediction": session.predict(image)}

    @app.get("/api/activations", summary="Every layer's output maps for an image (one PNG sprite per layer)")
    def activations(image: str) -> dict[str, Any]:
        return session.activations(image)

    @app.get("/api/unit", summary="One unit: theoretical and effective receptive fields, the kernel feeding it")
    def unit(image: str, layer: str, channel: int = Query(..., ge=0),
             position: str = Query("", description="comma-separated indices in the map, e.g. 3,4")) -> dict[str, Any]:
        try:
            pos = [int(v) for v in position.split(",") if v.strip() != ""]
        except ValueError:
            return _error(400, f"position must be comma-separated integers, got {position!r}")
        return session.unit(image, layer, channel, pos)

    @app.get("/api/attribution", summary="Where the model looks: Grad-CAM(++), saliency, IG or occlusion")
    def attribution(image: str, method: str, target: int | None = None, layer: str | None = None,
                    patch: int | None = None, stride: int | None = None,
                    faithfulness: bool = Query(False, description="also the deletion and insertion areas")) -> Any:
        return session.attribution(image, method, target=target, layer=layer, patch=patch, stride=stride,
                                   faithfulness=faithfulness)

    @app.get("/api/conv", summary="A convolution or pooling step by step, with the output-size formula")
    def conv(op: str | None = None, input: str | None = None, image: str | None = None, kernel: str | None = None,
             filter: int | None = None, example: str | None = None, kernel_size: str | None = None,
             stride: str | None = None, padding: str | None = None, dilation: str | None = None,
             padding_mode: str | None = None, value: float | None = None, ceil_mode: bool = False,
             count_include_pad: bool = True) -> dict[str, Any]:
        return session.conv(op=op, input=input, image=image, kernel=kernel, filter=filter, example=example,
                            kernel_size=parse_ints(kernel_size, "kernel_size"), stride=parse_ints(stride, "stride"),
                            padding=parse_padding(padding), dilation=parse_ints(dilation, "dilation"),
                            padding_mode=padding_mode or None,
                            value=value, ceil_mode=ceil_mode, count_include_pad=count_include_pad)

    @app.get("/api/filters", summary="The first conv layer's kernels")
    def filters() -> dict[str, Any]:
        return session.filters()

    @app.post("/api/maximize", summary="Start (or poll) the input that maximises one channel of a conv layer: "
                                        "{status: running, progress} until {status: done, png, gain}; cached per run")
    def maximize(layer: str, channel: int = Query(..., ge=0)) -> dict[str, Any]:
        return session.maximize(layer, channel)

    @app.get("/api/history", summary="Training curves from history.csv")
    def history() -> dict[str, Any]:
        return session.history()

    @app.get("/api/confusion", summary="The test split's confusion matrix")
    def confusion() -> dict[str, Any]:
        return session.confusion()

    return app
