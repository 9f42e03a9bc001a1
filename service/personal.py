"""Personalised covers and "delete my data".

Photos go through the personalize DAG's own intake (``training.dreambooth.submit_request``:
``training.photos`` validation, EXIF removal, storage under ``users/<user_id>/``), and the
request is rendered by the ``personalize`` DAG (created through Airflow's API in production;
with the embedded defaults it waits for a ``personalize`` run, e.g. from ``make demo-ui``).
Deleting goes through ``training.privacy.forget_user``, then the service's own rows.
"""

from __future__ import annotations

import json

from service.auth import delete_account
from service.covers import NotFound, RequestProblem
from service.generation import AirflowApiError, AirflowTrigger
from sleeve.store import ObjectStore
from sleeve.warehouse import Warehouse
from training.dreambooth import RequestError, submit_request
from training.photos import MAX_PHOTOS, PhotoLimits
from training.privacy import forget_user

MAX_FILES = MAX_PHOTOS
MAX_PHOTO_BYTES = PhotoLimits().max_bytes
MAX_UPLOAD_BYTES = MAX_FILES * MAX_PHOTO_BYTES + 2**20


def _read(upload) -> bytes:
    data = upload.file.read(MAX_PHOTO_BYTES + 1)
    if len(data) > MAX_PHOTO_BYTES:
        raise RequestProblem(f"a photo is larger than {MAX_PHOTO_BYTES // 2**20} MiB")
    return data


def submit(warehouse: Warehouse, store: ObjectStore, generator, user_id: str, uploads: list, class_noun: str,
           request_id: str) -> dict:
    """Validate and store the photos and record a personalisation request for the prompt of one
    of the user's cover requests; returns the request's id and status."""
    if len(uploads) > MAX_FILES:
        raise RequestProblem(f"{len(uploads)} photos given; at most {MAX_FILES} are allowed")
    rows = warehouse.query("SELECT prompt_id FROM generation_requests WHERE request_id = @r AND user_id = @u "
                           "AND kind = 'user'", {"r": request_id, "u": user_id})
    if not rows:
        raise NotFound(f"no request {request_id!r} of yours to personalise")
    photos = [_read(u) for u in uploads]
    try:
        row = submit_request(warehouse, store, user_id, photos, class_noun, prompt_ids=[rows[0]["prompt_id"]],
                             num_images=1)
    except RequestError as exc:
        raise RequestProblem(str(exc)) from None
    if row["status"] == "failed":
        raise RequestProblem(row["reason"])
    if isinstance(generator, AirflowTrigger):
        try:
            generator.trigger("personalize", {"request_ids": [row["request_id"]]})
        except AirflowApiError as exc:  # the request is recorded; the next personalize run takes it
            generator.last_error = str(exc)
    return {"request_id": row["request_id"], "status": row["status"], "photos": row["photo_count"]}


def overview(warehouse: Warehouse, user_id: str) -> dict:
    """What the personal page shows: the user's personalisation requests and requests to pick from."""
    mine = warehouse.query(
        "SELECT request_id, status, reason, photo_count, images, created_at FROM personalization_requests"
        " WHERE user_id = @u ORDER BY created_at DESC LIMIT 20", {"u": user_id})
    choices = warehouse.query(
        "SELECT r.request_id, c.title, c.artist FROM generation_requests AS r"
        " JOIN cover_inputs AS c ON c.request_id = r.request_id WHERE r.user_id = @u AND r.kind = 'user'"
        " ORDER BY r.created_at DESC LIMIT 20", {"u": user_id})
    return {"personal": mine, "choices": choices}


def forget(warehouse: Warehouse, store: ObjectStore, user_id: str) -> dict:
    """Everything of the user, through the pipeline's forget path; returns what was removed."""
    summary = forget_user(warehouse, store, user_id, requested_by="service")
    delete_account(warehouse, user_id)
    return {"deleted": True, "objects_deleted": summary["objects_deleted"],
            "rows_deleted": json.loads(json.dumps(summary["rows_deleted"]))}
