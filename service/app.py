"""The FastAPI application: HTML pages (Jinja2, forms with CSRF tokens) and the JSON API.

Both sides call the same functions (:mod:`service.covers`, :mod:`service.auth`,
:mod:`service.personal`); the pages add forms, redirects and a small script that shows covers
as they arrive. Errors are always a 4xx with a message (JSON ``{"detail": ...}`` under /api,
an error page elsewhere); a warehouse that stays locked by another process answers 503 with
``Retry-After``.
"""

from __future__ import annotations

import logging
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, File, Form, Header, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import auth, covers, personal
from service.auth import CSRF_COOKIE, SESSION_COOKIE, SESSION_MAX_AGE_S, AuthError, Sessions
from service.clock import Clock, wall_clock
from service.covers import Conflict, CoverRequest, NotFound, RequestProblem
from service.generation import AirflowTrigger, EmbeddedWorker
from service.warehouse import WarehouseBusy, service_warehouse
from sleeve.settings import Settings
from sleeve.store import open_store

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
ID = Annotated[str, PathParam(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
                              description="A request or image id (a UUID)")]
MAX_BODY_BYTES = 1 * 2**20
MAX_UPLOAD_BYTES = personal.MAX_UPLOAD_BYTES
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
}


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=auth.MAX_EMAIL, description="Email address")
    password: str = Field(max_length=auth.MAX_PASSWORD, description=f"{auth.MIN_PASSWORD}-{auth.MAX_PASSWORD} characters")


class Account(BaseModel):
    user_id: str
    email_masked: str


class Accepted(BaseModel):
    request_id: str
    status_url: str


class ReviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rating: int = Field(ge=1, le=5, description="Whole stars, 1-5", strict=True)
    comment: str | None = Field(None, max_length=2000)


class Images(BaseModel):
    images: list[dict]


class Problem(BaseModel):
    detail: str


ERRORS = {400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem},
          409: {"model": Problem}, 413: {"model": Problem}, 422: {"model": Problem}, 429: {"model": Problem},
          503: {"model": Problem}}


class BodyLimit:
    """Refuses a body over its limit as it streams in (a chunked upload has no Content-Length)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, seen = body_limit(scope["path"]), 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise StarletteHTTPException(413, f"the request body is larger than {limit // 2**20} MiB")
            return message

        await self.app(scope, counted, send)


class Guard:
    """Refuses what ``refusal(request)`` answers (an oversized body, a cross-site write) and adds
    the security headers to every response. A plain ASGI middleware: starlette's
    ``@app.middleware("http")`` costs a task group and a streamed copy of every response, a
    fifth of the service's CPU per call under load."""

    def __init__(self, app, refusal):
        self.app, self.refusal = app, refusal

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(SECURITY_HEADERS)
            await send(message)

        refused = self.refusal(Request(scope))
        if refused is not None:
            return await refused(scope, receive, with_headers)
        await self.app(scope, receive, with_headers)


def body_limit(path: str) -> int:
    return MAX_UPLOAD_BYTES if path in ("/api/me/photos", "/personal") else MAX_BODY_BYTES


def service_secret(settings: Settings) -> str:
    """SLEEVE_SERVICE_SECRET, or a random key made once and kept (0600) under SLEEVE_HOME."""
    if settings.service_secret:
        return settings.service_secret
    path = settings.home / "service-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def create_app(settings: Settings, *, worker: bool = True, clock: Clock = wall_clock) -> FastAPI:
    """The app for ``settings``. ``worker=False`` renders nothing (tests of the pages alone, or
    renders by batch_generate). ``clock`` dates what users do (sign-ups, requests, reviews)."""
    warehouse = service_warehouse(settings)
    store = open_store(settings.store_url)
    if settings.airflow_api_url:
        generator = AirflowTrigger(settings.airflow_api_url, settings.airflow_api_user, settings.airflow_api_password)
    else:
        generator = EmbeddedWorker(warehouse, store, settings, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        warehouse.migrate()
        if worker:
            generator.start()
        yield
        if worker:
            generator.stop()
        if hasattr(warehouse, "close"):
            warehouse.close()

    # No /docs page: it loads its script from a CDN, which the CSP (and an offline box) refuses.
    app = FastAPI(title="Sleeve covers", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Ask for album covers, review them, download them, browse the best.")
    app.add_middleware(BodyLimit)
    app.state.settings, app.state.warehouse, app.state.store = settings, warehouse, store
    app.state.generator = generator
    sessions = Sessions(service_secret(settings))
    labeller, gallery = covers.Labeller(clock=clock), covers.Gallery(clock=clock)
    reviews = app.state.reviews = covers.Reviews(warehouse, settings.service_db_wait_s, clock)
    templates = Jinja2Templates(directory=HERE / "templates")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    # --- cross-cutting: body size, same-site writes, headers, errors ------------------------
    def refusal(request: Request) -> Response | None:
        limit = body_limit(request.url.path)
        length = request.headers.get("content-length")
        if length and (not length.isdigit() or int(length) > limit):
            return _problem(request, 413, f"the request body is larger than {limit // 2**20} MiB")
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_site(request):
            return _problem(request, 403, "cross-site request refused")
        return None

    app.add_middleware(Guard, refusal=refusal)

    def _problem(request: Request, status: int, detail: str, headers: dict | None = None) -> Response:
        if request.url.path.startswith("/api/") or request.url.path in ("/healthz", "/openapi.json"):
            return JSONResponse({"detail": detail}, status, headers=headers)
        return templates.TemplateResponse(request, "error.html", {"status": status, "detail": detail,
                                                                  "user": _user(request)}, status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _problem(request, 422, validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _problem(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError):
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
        return _problem(request, exc.status, str(exc), headers)

    @app.exception_handler(RequestProblem)
    async def bad_request(request: Request, exc: RequestProblem):
        return _problem(request, 422, str(exc))

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict):
        return _problem(request, 409, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return _problem(request, 404, str(exc))

    @app.exception_handler(WarehouseBusy)
    async def busy(request: Request, exc: WarehouseBusy):
        return _problem(request, 503, str(exc), {"Retry-After": str(exc.retry_after_s)})

    # --- sessions ----------------------------------------------------------------------------
    def _user(request: Request) -> dict | None:
        return sessions.user(request.cookies.get(SESSION_COOKIE))

    def _require(request: Request) -> dict:
        user = _user(request)
        if user is None:
            raise StarletteHTTPException(401, "sign in first")
        return user

    def _sign_in(response: Response, request: Request, user: dict) -> Response:
        response.set_cookie(SESSION_COOKIE, sessions.session_value(user), max_age=SESSION_MAX_AGE_S, httponly=True,
                            samesite="lax", secure=request.url.scheme == "https", path="/")
        return response

    def _client(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    # --- JSON API -------------------------------------------------------------------------------
    @app.post("/api/signup", status_code=201, response_model=Account, responses=ERRORS, tags=["account"])
    def api_signup(body: Credentials, request: Request, response: Response):
        """Create an account (the email is stored only masked and hashed) and sign in."""
        user = auth.sign_up(warehouse, body.email, body.password, settings.pii_key, clock())
        _sign_in(response, request, user)
        return user

    @app.post("/api/login", response_model=Account, responses=ERRORS, tags=["account"])
    def api_login(body: Credentials, request: Request, response: Response):
        """Sign in: sets the session cookie. Throttled after repeated failures (429 + Retry-After)."""
        user = auth.sign_in(warehouse, body.email, body.password, settings.pii_key, _client(request))
        _sign_in(response, request, user)
        return user

    @app.post("/api/logout", responses=ERRORS, tags=["account"])
    def api_logout(response: Response) -> dict:
        response.delete_cookie(SESSION_COOKIE, path="/")
        return {"signed_out": True}

    @app.post("/api/covers", status_code=202, response_model=Accepted, responses=ERRORS, tags=["covers"])
    def api_create(body: CoverRequest, request: Request, idempotency_key: Annotated[str | None, Header(
            pattern=r"^[!-~]{1,200}$", description="Optional: the same key again returns the same request "
                                                    "(a retried POST makes no second request)")] = None):
        """Ask for covers of a song; they are rendered in the background (poll the status URL)."""
        user = _require(request)
        request_id = covers.create_request(warehouse, labeller.get(warehouse), user["user_id"], body, clock(),
                                           idempotency_key)
        generator.notify()
        return {"request_id": request_id, "status_url": f"/api/requests/{request_id}"}

    @app.get("/api/requests/{request_id}", responses=ERRORS, tags=["covers"])
    def api_request(request_id: ID, request: Request) -> dict:
        """The request's status (pending | running | done | failed), inputs, prompt and covers so far."""
        return covers.request_status(warehouse, _require(request)["user_id"], request_id)

    @app.post("/api/images/{image_id}/review", responses=ERRORS, tags=["covers"])
    def api_review(image_id: ID, body: ReviewBody, request: Request) -> dict:
        """Rate one of your covers 1-5 stars (a second review replaces the first); unlocks its download."""
        result = reviews.review(_require(request)["user_id"], image_id, body.rating, body.comment)
        gallery.clear()
        return result

    @app.get("/api/images/{image_id}/download", responses={**ERRORS, 200: {"content": {"image/png": {}}}},
             response_class=Response, tags=["covers"])
    def api_download(image_id: ID, request: Request):
        """The full-size cover: 403 until you reviewed it."""
        image = covers.own_image(warehouse, _require(request)["user_id"], image_id)
        if image["rating"] is None:
            raise StarletteHTTPException(403, "review this cover before downloading it")
        return _object(image["uri"], "image/png", f"sleeve-cover-{image_id}.png")

    @app.get("/api/images/{image_id}/thumb", responses={**ERRORS, 200: {"content": {"image/webp": {}}}},
             response_class=Response, tags=["covers"])
    def api_thumb(image_id: ID, request: Request):
        """A cover's thumbnail: yours, or one the gallery shows."""
        user = _user(request)
        image = covers.visible_image(warehouse, user and user["user_id"], image_id)
        return _object(image["thumb_uri"], "image/webp", None)

    def _object(uri: str, media_type: str, filename: str | None) -> Response:
        from sleeve.store import open_uri

        src, key = open_uri(uri, store)
        headers = {"Cache-Control": "private, max-age=3600"}
        if filename:
            headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        return Response(src.get_bytes(key), media_type=media_type, headers=headers)

    @app.get("/api/gallery", response_model=Images, responses=ERRORS, tags=["browse"])
    def api_gallery():
        """The 12 best-rated covers of the last 30 days (personalised covers never appear)."""
        return {"images": gallery.get(warehouse)}

    @app.get("/api/me/images", response_model=Images, responses=ERRORS, tags=["browse"])
    def api_my_images(request: Request):
        """Your 20 most recently reviewed covers."""
        return {"images": covers.my_images(warehouse, _require(request)["user_id"])}

    @app.post("/api/me/photos", status_code=202, responses=ERRORS, tags=["personal"])
    def api_photos(request: Request, photos: Annotated[list[UploadFile], File(description="3-20 photos")],
                   request_id: Annotated[str, Form(description="One of your requests whose prompt to render",
                                                   pattern=r"^[0-9a-f-]{36}$")],
                   class_noun: Annotated[str, Form(max_length=32)] = "person") -> dict:
        """Covers with your face: 3-20 photos (validated, EXIF removed, stored under your id only)."""
        user = _require(request)
        return personal.submit(warehouse, store, generator, user["user_id"], photos, class_noun, request_id)

    @app.post("/api/me/delete", responses=ERRORS, tags=["personal"])
    def api_delete(request: Request, response: Response) -> dict:
        """Delete everything of yours: photos, adapters, covers, reviews, requests and the account."""
        summary = personal.forget(warehouse, store, _require(request)["user_id"])
        gallery.clear()
        response.delete_cookie(SESSION_COOKIE, path="/")
        return summary

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict:
        try:
            warehouse.query("SELECT 1 AS ok")
            state = "ok"
        except WarehouseBusy:
            state = "busy"
        return {"status": "ok", "warehouse": state, "warehouse_yields": getattr(warehouse, "yields", None),
                "generation": "airflow" if settings.airflow_api_url else "embedded",
                "generation_ready": generator.ready, "generation_error": generator.last_error}

    # --- pages ------------------------------------------------------------------------------------
    def page(request: Request, name: str, status: int = 200, **values) -> Response:
        token, cookie = _csrf(request)
        response = templates.TemplateResponse(request, name, {"user": _user(request), "csrf": token, **values},
                                              status)
        if cookie:
            response.set_cookie(CSRF_COOKIE, cookie, max_age=SESSION_MAX_AGE_S, httponly=True, samesite="lax",
                                secure=request.url.scheme == "https", path="/")
        return response

    def _csrf(request: Request) -> tuple[str, str | None]:
        token = sessions.csrf_token(request.cookies.get(CSRF_COOKIE))
        return (token, None) if token else sessions.new_csrf()

    def _check_csrf(request: Request, token: str | None) -> None:
        if not sessions.csrf_ok(request.cookies.get(CSRF_COOKIE), token):
            raise StarletteHTTPException(403, "this form has expired; reload the page and try again")

    def _page_user(request: Request) -> dict | RedirectResponse:
        user = _user(request)
        return user or RedirectResponse(f"/login?next={quote(request.url.path)}", 303)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request):
        return page(request, "gallery.html", images=gallery.get(warehouse))

    @app.get("/signup", response_class=HTMLResponse, include_in_schema=False)
    def signup_page(request: Request):
        return page(request, "account.html", mode="signup")

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/"):
        return page(request, "account.html", mode="login", next=_safe_next(next))

    @app.post("/signup", include_in_schema=False)
    def signup_form(request: Request, email: Annotated[str, Form(max_length=300)],
                    password: Annotated[str, Form(max_length=300)], csrf: Annotated[str, Form(max_length=200)] = ""):
        _check_csrf(request, csrf)
        try:
            user = auth.sign_up(warehouse, email, password, settings.pii_key, clock())
        except AuthError as exc:
            return page(request, "account.html", exc.status, mode="signup", error=str(exc))
        return _sign_in(RedirectResponse("/create", 303), request, user)

    @app.post("/login", include_in_schema=False)
    def login_form(request: Request, email: Annotated[str, Form(max_length=300)],
                   password: Annotated[str, Form(max_length=300)], csrf: Annotated[str, Form(max_length=200)] = "",
                   next: Annotated[str, Form(max_length=300)] = "/"):
        _check_csrf(request, csrf)
        try:
            user = auth.sign_in(warehouse, email, password, settings.pii_key, _client(request))
        except AuthError as exc:
            headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
            response = page(request, "account.html", exc.status, mode="login", error=str(exc), next=_safe_next(next))
            response.headers.update(headers or {})
            return response
        return _sign_in(RedirectResponse(_safe_next(next), 303), request, user)

    @app.post("/logout", include_in_schema=False)
    def logout_form(request: Request, csrf: Annotated[str, Form(max_length=200)] = ""):
        _check_csrf(request, csrf)
        response = RedirectResponse("/", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/create", response_class=HTMLResponse, include_in_schema=False)
    def create_page(request: Request):
        user = _page_user(request)
        if isinstance(user, Response):
            return user
        return page(request, "create.html", form={}, recent=covers.user_requests(warehouse, user["user_id"]))

    @app.post("/create", include_in_schema=False)
    async def create_form(request: Request):
        user = _page_user(request)
        if isinstance(user, Response):
            return user
        form = await request.form(max_files=0, max_fields=20)
        _check_csrf(request, form.get("csrf"))
        values = {k: str(form.get(k) or "") for k in
                  ("title", "artist", "genre", "lyrics", "keywords", "style", "colors", "num_images")}
        try:
            req = CoverRequest(
                title=values["title"], artist=values["artist"], genre=values["genre"] or None,
                lyrics=values["lyrics"] or None, keywords=_split(values["keywords"]), style=values["style"] or None,
                colors=_split(values["colors"]), include_person=form.get("include_person") == "on",
                num_images=int(values["num_images"]) if values["num_images"].isdigit() else covers.DEFAULT_IMAGES)
            request_id = covers.create_request(warehouse, labeller.get(warehouse), user["user_id"], req, clock())
        except ValidationError as exc:
            return page(request, "create.html", 422, form=values, error=validation_message(exc.errors()),
                        recent=covers.user_requests(warehouse, user["user_id"]))
        except RequestProblem as exc:
            return page(request, "create.html", 422, form=values, error=str(exc),
                        recent=covers.user_requests(warehouse, user["user_id"]))
        generator.notify()
        return RedirectResponse(f"/requests/{request_id}", 303)

    @app.get("/requests/{request_id}", response_class=HTMLResponse, include_in_schema=False)
    def request_page(request_id: ID, request: Request):
        user = _page_user(request)
        if isinstance(user, Response):
            return user
        return page(request, "request.html", req=covers.request_status(warehouse, user["user_id"], request_id))

    @app.post("/images/{image_id}/review", include_in_schema=False)
    def review_form(image_id: ID, request: Request, rating: Annotated[str, Form(max_length=2)],
                    comment: Annotated[str, Form(max_length=2000)] = "", csrf: Annotated[str, Form(max_length=200)] = ""):
        user = _page_user(request)
        if isinstance(user, Response):
            return user
        _check_csrf(request, csrf)
        if not rating.isdigit() or not 1 <= int(rating) <= 5:
            raise RequestProblem("rating must be a whole number of stars from 1 to 5")
        image = covers.own_image(warehouse, user["user_id"], image_id)
        reviews.review(user["user_id"], image_id, int(rating), comment or None)
        gallery.clear()
        return RedirectResponse(f"/requests/{image['request_id']}#image-{image_id}", 303)

    @app.get("/me", response_class=HTMLResponse, include_in_schema=False)
    def me_page(request: Request):
        user = _page_user(request)
        if isinstance(user, Response):
            return user
        return page(request, "me.html", images=covers.my_images(warehouse, user["user_id"]))

    @app.get("/personal", response_class=HTMLResponse, include_in_schema=False)
    def personal_page(request: Request):
        user = _page_user(request)
        if isinstance(user, Response):
            return user
        return page(request, "personal.html", **personal.overview(warehouse, user["user_id"]))

    @app.post("/personal", include_in_schema=False)
    async def personal_form(request: Request):
        user = _page_user(request)
        if isinstance(user, Response):
            return user
        form = await request.form(max_files=personal.MAX_FILES, max_fields=10,
                                  max_part_size=personal.MAX_PHOTO_BYTES)
        _check_csrf(request, form.get("csrf"))
        photos = [f for f in form.getlist("photos") if hasattr(f, "read")]
        try:
            personal.submit(warehouse, store, generator, user["user_id"], photos,
                            str(form.get("class_noun") or "person"), str(form.get("request_id") or ""))
        except RequestProblem as exc:
            return page(request, "personal.html", 422, error=str(exc), **personal.overview(warehouse, user["user_id"]))
        return RedirectResponse("/personal", 303)

    @app.post("/me/delete", include_in_schema=False)
    def delete_form(request: Request, csrf: Annotated[str, Form(max_length=200)] = "",
                    confirm: Annotated[str, Form(max_length=10)] = ""):
        user = _page_user(request)
        if isinstance(user, Response):
            return user
        _check_csrf(request, csrf)
        if confirm != "delete":
            raise RequestProblem("type delete to confirm")
        personal.forget(warehouse, store, user["user_id"])
        gallery.clear()
        response = RedirectResponse("/", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return app


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _safe_next(target: str) -> str:
    """Only a path on this site (no open redirect)."""
    parts = urlsplit(target or "/")
    return target if target.startswith("/") and not target.startswith("//") and not parts.netloc else "/"


def _same_site(request: Request) -> bool:
    """A state-changing request must not come from another site (when the browser says where from)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


def validation_message(errors: list[dict]) -> str:
    """Pydantic errors as one line naming each field (never echoing the value: it may be a password)."""
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "form"))
        parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
