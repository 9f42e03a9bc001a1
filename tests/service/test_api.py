"""The JSON API and the pages, in-process: accounts, sessions, CSRF, requests, reviews, downloads,
the gallery and my page, and the bad inputs each must refuse with a clear 4xx."""

from __future__ import annotations

import io
import json
import re

import pytest

from tests.service.conftest import PASSWORD, add_images, create, sign_up

EMAIL = "Ann.Lee@Example.com"


def _all_text(warehouse) -> str:
    """Every value of every table, as one string (to look for leaked personal data)."""
    return json.dumps([warehouse.query(f"SELECT * FROM {t}") for t in warehouse.tables()], default=str)


# --- accounts ------------------------------------------------------------------------------------
def test_sign_up_stores_the_email_only_masked_and_hashed_and_the_password_only_as_argon2(client):
    account = sign_up(client, EMAIL)
    assert account["email_masked"] == "a***@e***.com"
    warehouse = client.app_state.warehouse
    text = _all_text(warehouse).lower()
    assert EMAIL.lower() not in text and "ann.lee" not in text and PASSWORD not in text
    stored = warehouse.query("SELECT password_hash FROM service_accounts")[0]["password_hash"]
    assert stored.startswith("$argon2id$")
    assert "password_hash" not in warehouse.columns("users")


def test_session_cookie_is_signed_httponly_and_samesite(client):
    response = client.post("/api/signup", json={"email": EMAIL, "password": PASSWORD})
    cookie = response.headers["set-cookie"].lower()
    assert "sleeve_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert client.get("/api/me/images").status_code == 200
    # A tampered cookie is no session.
    value = client.cookies.get("sleeve_session")
    client.cookies.clear()
    client.cookies.set("sleeve_session", value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    assert client.get("/api/me/images").status_code == 401


@pytest.mark.parametrize("body, status, words", [
    ({"email": "not-an-email", "password": PASSWORD}, 422, "email"),
    ({"email": "a@b.co", "password": "short"}, 422, "password"),
    ({"email": "a@b.co", "password": "x" * 200}, 422, "password"),
    ({"email": "a@b.co"}, 422, "password"),
    ({"email": "<script>@x.com", "password": PASSWORD}, 422, "email"),
    ({"email": "a@b.co", "password": PASSWORD, "admin": True}, 422, "admin"),
])
def test_bad_sign_ups_are_refused_with_a_message(client, body, status, words):
    response = client.post("/api/signup", json=body)
    assert response.status_code == status and words in response.json()["detail"]
    assert PASSWORD not in response.text  # an error never echoes the password


def test_one_account_per_email(client):
    sign_up(client, EMAIL)
    response = client.post("/api/signup", json={"email": EMAIL.upper(), "password": PASSWORD})
    assert response.status_code == 409 and "sign in" in response.json()["detail"]


def test_a_sign_up_cut_short_before_its_account_can_be_completed(client):
    from service.auth import user_id_for
    from sleeve.ids import hash_email

    email_hash = hash_email(EMAIL, client.app_state.settings.pii_key)
    client.app_state.warehouse.upsert("users", [{"user_id": user_id_for(email_hash), "email_hash": email_hash}])
    assert sign_up(client, EMAIL)["user_id"] == user_id_for(email_hash)
    assert client.app_state.warehouse.count("users") == 1


def test_sign_in_and_out(client):
    sign_up(client, EMAIL)
    client.post("/api/logout")
    assert client.get("/api/me/images").status_code == 401
    assert client.post("/api/login", json={"email": "x@example.com", "password": PASSWORD}).status_code == 401
    assert client.post("/api/login", json={"email": EMAIL, "password": PASSWORD + "!"}).status_code == 401
    response = client.post("/api/login", json={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 200 and response.json()["email_masked"] == "a***@e***.com"
    assert client.get("/api/me/images").status_code == 200


def test_sign_in_is_throttled_after_repeated_failures(client):
    from service import auth

    auth.PER_ADDRESS._failures.clear()
    sign_up(client, EMAIL)
    for _ in range(auth.PER_ADDRESS.limit):
        assert client.post("/api/login", json={"email": EMAIL, "password": "wrong-password"}).status_code == 401
    response = client.post("/api/login", json={"email": EMAIL, "password": PASSWORD})  # even the right one
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0
    assert "too many" in response.json()["detail"]
    auth.PER_ADDRESS._failures.clear()
    assert client.post("/api/login", json={"email": EMAIL, "password": PASSWORD}).status_code == 200


# --- create ---------------------------------------------------------------------------------------
def test_a_request_is_recorded_with_its_lineage_and_label_songs_skips_its_song(client):
    from inference.labels import OFFLINE_VERSION, load_songs, plan
    from inference.prompts import PROMPT_VERSION

    user = sign_up(client)
    request_id = create(client, keywords=["moon", "lighthouse"], style="watercolor painting", colors=["teal"],
                        include_person=True, num_images=3)
    warehouse = client.app_state.warehouse
    row = warehouse.query("SELECT * FROM generation_requests WHERE request_id = @r", {"r": request_id})[0]
    assert (row["kind"], row["status"], row["num_images"], row["user_id"]) == ("user", "pending", 3, user["user_id"])
    prompt = warehouse.query("SELECT * FROM prompts WHERE prompt_id = @p", {"p": row["prompt_id"]})[0]
    assert prompt["song_id"] == row["song_id"] and prompt["prompt_version"] == PROMPT_VERSION
    assert all(w in prompt["positive"] for w in ("a person", "moon", "teal", "watercolor painting"))
    assert "person" not in prompt["negative"]
    song = warehouse.query("SELECT * FROM songs WHERE song_id = @s", {"s": row["song_id"]})[0]
    assert (song["title"], song["source"]) == ("Night Letter", "service")
    assert plan(warehouse, load_songs(warehouse), OFFLINE_VERSION, PROMPT_VERSION).skipped == [row["song_id"]]
    status = client.get(f"/api/requests/{request_id}").json()
    assert status["status"] == "pending" and status["images"] == [] and status["inputs"]["colors"] == ["teal"]


def test_without_a_person_the_negative_prompt_says_so(client):
    sign_up(client)
    request_id = create(client)
    warehouse = client.app_state.warehouse
    negative = warehouse.query("SELECT p.negative FROM prompts AS p JOIN generation_requests AS r "
                               "ON r.prompt_id = p.prompt_id WHERE r.request_id = @r", {"r": request_id})
    assert "person, people" in negative[0]["negative"]


@pytest.mark.parametrize("fields, words", [
    ({"title": "nude beach"}, "content policy"),
    ({"keywords": ["a photo of taylor swift"]}, "names a person"),
    ({"lyrics": "visit www.example.com now"}, "contains a link"),
    ({"style": "logo design"}, "text or lettering"),
    ({"colors": ["sexy red"]}, "sexual content"),
    ({"title": "x" * 201}, "title"),
    ({"title": "   "}, "title"),
    ({"lyrics": "y" * 5001}, "lyrics"),
    ({"keywords": ["k"] * 9}, "keywords"),
    ({"keywords": ["z" * 41]}, "keywords"),
    ({"style": "<b>bold</b>"}, "plain English"),
    ({"colors": ["파랑"]}, "plain English"),
    ({"num_images": 0}, "num_images"),
    ({"num_images": 9}, "num_images"),
    ({"title": "a\x00b"}, "control"),
    ({"unknown": 1}, "unknown"),
])
def test_bad_create_requests_get_a_clear_422(client, fields, words):
    sign_up(client)
    response = client.post("/api/covers", json={"title": "Night Letter", "artist": "Mina", **fields})
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"]
    assert client.app_state.warehouse.count("generation_requests") == 0


def test_create_needs_a_session_and_a_json_body(client):
    assert client.post("/api/covers", json={"title": "a", "artist": "b"}).status_code == 401
    sign_up(client)
    response = client.post("/api/covers", content='{"title": "a", "artist": "b"}', headers={"content-type": "text/plain"})
    assert response.status_code == 422  # what a cross-site form could send is not accepted


def test_sql_ish_text_is_stored_as_text(client):
    sign_up(client)
    title = "'; DROP TABLE reviews; --"
    request_id = create(client, title=title, artist="Robert'); DELETE FROM users;--")
    assert client.get(f"/api/requests/{request_id}").json()["inputs"]["title"] == title
    assert client.app_state.warehouse.count("users") == 1 and "reviews" in client.app_state.warehouse.tables()


# --- reviews and downloads ------------------------------------------------------------------------
def test_download_is_locked_until_reviewed_and_a_second_review_updates(client):
    sign_up(client)
    request_id = create(client)
    image = add_images(client.app_state, request_id)[0]
    locked = client.get(f"/api/images/{image}/download")
    assert locked.status_code == 403 and "review" in locked.json()["detail"]
    assert client.post(f"/api/images/{image}/review", json={"rating": 5, "comment": "lovely"}).status_code == 200
    download = client.get(f"/api/images/{image}/download")
    assert download.status_code == 200 and download.content.startswith(b"\x89PNG")
    assert "attachment" in download.headers["content-disposition"]
    assert client.post(f"/api/images/{image}/review", json={"rating": 2}).status_code == 200
    rows = client.app_state.warehouse.query("SELECT rating, comment FROM reviews WHERE image_id = @i", {"i": image})
    assert rows == [{"rating": 2, "comment": None}]
    status = client.get(f"/api/requests/{request_id}").json()
    assert [i["reviewed"] for i in status["images"]] == [True, False, False, False]


def test_concurrent_reviews_share_writes_and_all_count(client):
    from concurrent.futures import ThreadPoolExecutor

    user = sign_up(client)
    images = add_images(client.app_state, create(client, num_images=8), n=8)
    reviews = client.app_state.reviews
    wanted = {image: 1 + i % 5 for i, image in enumerate(images)}
    before = reviews.writes
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda image: reviews.review(user["user_id"], image, wanted[image], None), images * 3))
    assert len(results) == 24
    stored = client.app_state.warehouse.query("SELECT image_id, rating FROM reviews")
    assert {r["image_id"]: r["rating"] for r in stored} == wanted and len(stored) == 8
    assert reviews.writes - before < 24  # some reviews shared a write


@pytest.mark.parametrize("body", [{"rating": 0}, {"rating": 6}, {"rating": 4.5}, {"rating": "5"}, {"rating": True},
                                  {"rating": None}, {}, {"rating": 3, "comment": "c" * 2001},
                                  {"rating": 3, "extra": 1}])
def test_wrong_star_counts_are_refused(client, body):
    sign_up(client)
    image = add_images(client.app_state, create(client))[0]
    response = client.post(f"/api/images/{image}/review", json=body)
    assert response.status_code == 422 and response.json()["detail"]
    assert client.app_state.warehouse.count("reviews") == 0


def test_another_users_request_and_images_look_like_missing_ones(client):
    sign_up(client, "owner@example.com")
    request_id = create(client)
    image = add_images(client.app_state, request_id)[0]
    client.post(f"/api/images/{image}/review", json={"rating": 2})
    client.post("/api/logout")
    sign_up(client, "other@example.com")
    for response in (client.get(f"/api/requests/{request_id}"),
                     client.post(f"/api/images/{image}/review", json={"rating": 5}),
                     client.get(f"/api/images/{image}/download"),
                     client.get(f"/api/images/{image}/thumb")):
        assert response.status_code == 404 and "owner@" not in response.text
    assert client.app_state.warehouse.query("SELECT rating FROM reviews") == [{"rating": 2}]
    assert client.get("/api/requests/not-a-uuid").status_code == 422
    assert client.get("/api/images/00000000-0000-0000-0000-000000000000/download").status_code == 404


# --- gallery and my page --------------------------------------------------------------------------
def test_gallery_shows_well_rated_covers_and_my_page_the_latest_reviewed(client):
    sign_up(client)
    request_id = create(client, title="Blue Hour")
    images = add_images(client.app_state, request_id, n=4)
    for image, stars in zip(images, (5, 4, 3, 1), strict=True):
        client.post(f"/api/images/{image}/review", json={"rating": stars})
    gallery = client.get("/api/gallery").json()["images"]
    assert [g["image_id"] for g in gallery] == images[:2] and gallery[0]["title"] == "Blue Hour"
    mine = client.get("/api/me/images").json()["images"]
    assert [m["image_id"] for m in mine] == images[::-1] and mine[0]["rating"] == 1
    # A well-rated cover is public in the gallery (its thumbnail too); a poorly rated one is not.
    client.post("/api/logout")
    assert client.get(gallery[0]["thumb_url"]).status_code == 200
    assert client.get(f"/api/images/{images[3]}/thumb").status_code == 404
    assert client.get("/api/me/images").status_code == 401


def test_my_page_holds_the_20_most_recent(client):
    sign_up(client)
    images = add_images(client.app_state, create(client, num_images=8), n=8)
    images += add_images(client.app_state, create(client, num_images=8), n=8)
    images += add_images(client.app_state, create(client, num_images=8), n=8)
    for image in images:
        client.post(f"/api/images/{image}/review", json={"rating": 3})
    mine = [m["image_id"] for m in client.get("/api/me/images").json()["images"]]
    assert mine == images[::-1][:20]


# --- pages: escaping and CSRF ---------------------------------------------------------------------
def _csrf(client, path: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


def test_html_in_a_title_is_escaped_on_every_page(client):
    sign_up(client)
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    request_id = create(client, title=evil, artist=evil)
    image = add_images(client.app_state, request_id, n=1)[0]
    client.post(f"/api/images/{image}/review", json={"rating": 5, "comment": evil})
    for path in ("/", "/create", f"/requests/{request_id}", "/me", "/personal"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
    assert "&lt;script&gt;alert" in client.get(f"/requests/{request_id}").text
    assert "script-src 'self'" in client.get("/").headers["content-security-policy"]


def test_forms_need_their_csrf_token(client):
    sign_up(client)
    token = _csrf(client, "/create")
    form = {"title": "Rain", "artist": "Joon", "num_images": "2"}
    assert client.post("/create", data=form).status_code == 403
    assert client.post("/create", data={**form, "csrf": "forged"}).status_code == 403
    response = client.post("/create", data={**form, "csrf": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/requests/")
    request_id = response.headers["location"].rsplit("/", 1)[1]
    image = add_images(client.app_state, request_id, n=2)[0]
    assert client.post(f"/images/{image}/review", data={"rating": "4"}).status_code == 403
    reviewed = client.post(f"/images/{image}/review", data={"rating": "4", "csrf": token}, follow_redirects=False)
    assert reviewed.status_code == 303
    assert client.post(f"/images/{image}/review", data={"rating": "9", "csrf": token}).status_code == 422


def test_cross_site_writes_are_refused(client):
    sign_up(client)
    response = client.post("/api/covers", json={"title": "a", "artist": "b"}, headers={"origin": "https://evil.example"})
    assert response.status_code == 403 and "cross-site" in response.json()["detail"]
    assert client.post("/api/covers", json={"title": "a", "artist": "b"},
                       headers={"origin": "http://testserver"}).status_code == 202


def test_form_errors_show_on_the_page_and_keep_the_input(client):
    sign_up(client)
    token = _csrf(client, "/create")
    page = client.post("/create", data={"title": "nude", "artist": "Joon", "csrf": token})
    assert page.status_code == 422 and "content policy" in page.text and 'value="Joon"' in page.text


def test_oversized_bodies_are_refused_before_they_are_read(client):
    sign_up(client)
    response = client.post("/api/covers", content=b"{" + b" " * (2 * 2**20) + b"}",
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than" in response.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"title": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'", "artist": "y"}'

    response = client.post("/api/covers", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than" in response.json()["detail"]


# --- personalised covers and delete-my-data -------------------------------------------------------
def _png(size=(320, 320), colour=(200, 120, 90)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_photos_are_validated_and_stored_under_the_user(client):
    from training.photos import synthetic_photos

    user = sign_up(client)
    request_id = create(client)
    files = [("photos", (f"p{i}.jpg", data, "image/jpeg")) for i, data in enumerate(synthetic_photos(3, seed=3))]
    response = client.post("/api/me/photos", files=files, data={"request_id": request_id})
    assert response.status_code == 202 and response.json()["status"] == "pending"
    keys = client.app_state.store.list(f"users/{user['user_id']}/photos/")
    assert len(keys) == 3
    row = client.app_state.warehouse.query("SELECT prompt_ids, status FROM personalization_requests")[0]
    assert row["status"] == "pending" and len(json.loads(row["prompt_ids"])) == 1


@pytest.mark.parametrize("uploads, words", [
    ([b"not an image at all"] * 3, "not a readable image"),
    ([_png(), _png(colour=(1, 2, 3))], "at least 3"),
    ([_png(), _png(), _png()], "duplicate"),
    ([_png((100, 100)), _png((100, 100), (9, 9, 9)), _png((100, 100), (8, 8, 8))], "at least 256"),
])
def test_bad_photos_are_refused_with_the_reason(client, uploads, words):
    sign_up(client)
    request_id = create(client)
    files = [("photos", (f"p{i}.png", data, "image/png")) for i, data in enumerate(uploads)]
    response = client.post("/api/me/photos", files=files, data={"request_id": request_id})
    assert response.status_code == 422 and words in response.json()["detail"]


def test_a_decompression_bomb_is_refused_before_decoding(client):
    from PIL import Image

    sign_up(client)
    request_id = create(client)
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, format="PNG")  # 81 Mpx in a few kB
    files = [("photos", (f"p{i}.png", buf.getvalue() + bytes([i]), "image/png")) for i in range(3)]
    response = client.post("/api/me/photos", files=files, data={"request_id": request_id})
    assert response.status_code == 422 and "pixels" in response.json()["detail"]


def test_photos_need_one_of_your_own_requests(client):
    sign_up(client, "a@example.com")
    request_id = create(client)
    client.post("/api/logout")
    sign_up(client, "b@example.com")
    files = [("photos", ("p.png", _png(), "image/png"))] * 3
    assert client.post("/api/me/photos", files=files, data={"request_id": request_id}).status_code == 404


def test_delete_my_data_removes_everything_of_the_user_and_the_account(client):
    from training.photos import synthetic_photos

    user = sign_up(client, EMAIL)
    request_id = create(client)
    image = add_images(client.app_state, request_id, n=2)[0]
    client.post(f"/api/images/{image}/review", json={"rating": 5})
    files = [("photos", (f"p{i}.jpg", d, "image/jpeg")) for i, d in enumerate(synthetic_photos(3, seed=5))]
    client.post("/api/me/photos", files=files, data={"request_id": request_id})
    response = client.post("/api/me/delete")
    assert response.status_code == 200 and response.json()["deleted"]
    warehouse, store = client.app_state.warehouse, client.app_state.store
    for table in ("users", "service_accounts", "generation_requests", "images", "reviews", "cover_inputs",
                  "personalization_requests"):
        assert warehouse.query(f"SELECT COUNT(*) AS n FROM {table} WHERE TRUE")[0]["n"] == 0, table
    assert store.list(f"users/{user['user_id']}/") == []
    assert warehouse.count("deletion_audit") == 1
    assert client.get("/api/me/images").status_code == 401
    assert client.post("/api/login", json={"email": EMAIL, "password": PASSWORD}).status_code == 401


def test_healthz(client):
    body = client.get("/healthz").json()
    assert body == {"status": "ok", "warehouse": "ok", "warehouse_yields": 0, "generation": "embedded",
                    "generation_ready": False,
                    "generation_error": None}  # this app was made without its worker
