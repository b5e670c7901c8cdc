from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response

from app.annotations.derived import derive
from app.core.db import utcnow
from app.core.enums import Role, Split
from app.core.errors import STORAGE_RESPONSES, DomainError, Forbidden, PayloadTooLarge
from app.core.ids import IdPath
from app.core.pagination import Page, decode_cursor, encode_cursor
from app.deps import Blobs, CurrentUser, DbSession, Engineer, SettingsDep
from app.items import repository, service
from app.items.bulk import (
    NpzImport,
    ZipImport,
    open_feature_npz,
    open_npz,
    prepare_zip,
    sniff_archive,
)
from app.items.media import MediaError, MediaLimits, prepare_image
from app.items.schemas import (
    BulkResult,
    DerivedLabelOut,
    FeatureSetOut,
    FeaturesUploaded,
    ItemOut,
    LabelledItemOut,
)
from app.projects import service as projects
from app.projects.service import get_for_engineer

router = APIRouter(tags=["items"])


def _limits(settings: SettingsDep) -> MediaLimits:
    return MediaLimits(
        max_upload_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
        max_bulk_bytes=settings.max_bulk_bytes,
        max_bulk_uncompressed_bytes=settings.max_bulk_uncompressed_bytes,
        max_bulk_items=settings.max_bulk_items,
    )


def _media_error(exc: MediaError) -> DomainError:
    err = DomainError(str(exc), code=exc.code)
    err.status_code = exc.status
    return err


@router.post(
    "/projects/{project_id}/items",
    response_model=ItemOut,
    status_code=201,
    responses=STORAGE_RESPONSES,
)
def upload_item(
    project_id: IdPath,
    db: DbSession,
    actor: Engineer,
    blobs: Blobs,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="A PNG or JPEG image.")],
    split: Annotated[Split, Form()] = Split.pool,
    external_id: Annotated[str | None, Form(max_length=255)] = None,
) -> ItemOut:
    project = get_for_engineer(db, actor, project_id)
    data = file.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"image is larger than {settings.max_upload_bytes} bytes")
    try:
        prepared = prepare_image(
            data, limits=_limits(settings), filename=file.filename, external_id=external_id
        )
    except MediaError as exc:
        raise _media_error(exc) from exc
    (item,) = service.add_items(db, blobs, project, [prepared], split)
    return ItemOut.model_validate(item)


@router.post(
    "/projects/{project_id}/items:bulk",
    response_model=BulkResult,
    status_code=201,
    responses=STORAGE_RESPONSES,
)
def upload_bulk(
    project_id: IdPath,
    db: DbSession,
    actor: Engineer,
    blobs: Blobs,
    settings: SettingsDep,
    archive: Annotated[
        UploadFile,
        File(
            description="A zip of PNG/JPEG images, or an .npz with `images` or `features` "
            "(and beside `images`, named vectors for models as `features_<name>` arrays)."
        ),
    ],
    manifest: Annotated[
        UploadFile | None,
        File(description="Optional CSV for a zip: filename,external_id,split."),
    ] = None,
    split: Annotated[Split, Form(description="Split for rows that name none.")] = Split.pool,
) -> BulkResult:
    project = get_for_engineer(db, actor, project_id)
    limits = _limits(settings)
    fh = archive.file
    head = fh.read(4096)
    fh.seek(0)
    try:
        kind = sniff_archive(head)
        # Validated whole, then read item by item: an upload holds its arrays, not every
        # payload at once (issue 15).
        prepared: NpzImport | ZipImport
        if kind == "npz":
            prepared = open_npz(fh, limits=limits)
        elif kind == "zip":
            prepared = prepare_zip(fh, csv_file=manifest.file if manifest else None, limits=limits)
        else:
            raise MediaError("unsupported_archive", "upload a .zip of images or an .npz")
        return service.add_in_parts(db, blobs, project, prepared, split)
    except MediaError as exc:  # also a zip member that changed while it was read again
        raise _media_error(exc) from exc


@router.post(
    "/projects/{project_id}/features:bulk",
    response_model=FeaturesUploaded,
    status_code=201,
    responses=STORAGE_RESPONSES,
)
def upload_features(
    project_id: IdPath,
    db: DbSession,
    actor: Engineer,
    blobs: Blobs,
    settings: SettingsDep,
    archive: Annotated[
        UploadFile,
        File(
            description="An .npz of `external_ids` (N,) and one or more `features_<name>` "
            "(N, D) float32 arrays: named vectors for items uploaded before (a vector of the "
            "same name is replaced)."
        ),
    ],
) -> FeaturesUploaded:
    project = get_for_engineer(db, actor, project_id)
    try:
        ids, arrays = open_feature_npz(archive.file, limits=_limits(settings))
    except MediaError as exc:
        raise _media_error(exc) from exc
    return FeaturesUploaded(stored=service.attach_features(db, blobs, project, ids, arrays))


@router.get("/projects/{project_id}/features", response_model=list[FeatureSetOut])
def list_features(project_id: IdPath, db: DbSession, actor: Engineer) -> list[FeatureSetOut]:
    """The names of feature vectors in the project, their length and coverage."""
    project = get_for_engineer(db, actor, project_id)
    return service.feature_summary(db, project)


@router.get("/projects/{project_id}/items", response_model=Page[LabelledItemOut])
def list_items(
    project_id: IdPath,
    db: DbSession,
    actor: Engineer,
    settings: SettingsDep,
    blobs: Blobs,
    split: Split | None = None,
    labelled: bool | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1)] = 100,
) -> Page[LabelledItemOut]:
    project = get_for_engineer(db, actor, project_id)
    if limit > settings.max_page_size:
        raise DomainError(f"limit must be at most {settings.max_page_size}", code="page_too_large")
    rows = repository.page(
        db, project_id, after_id=decode_cursor(cursor), limit=limit, split=split, labelled=labelled
    )
    next_cursor = encode_cursor(rows[-1].id) if len(rows) == limit else None
    derived = derive(db, project, blobs)
    classes = list(project.classes)
    return Page[LabelledItemOut](
        items=[
            LabelledItemOut.model_validate(r).model_copy(
                update={"derived": _derived_out(derived.describe(r.id, classes))}
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )


@router.get("/items/{item_id}", response_model=LabelledItemOut)
def get_item(item_id: IdPath, db: DbSession, actor: CurrentUser, blobs: Blobs) -> LabelledItemOut:
    item, project = projects.get_visible_item(db, actor, item_id)
    if actor.role is Role.annotator:
        if item.split is Split.test:
            projects.get_for_engineer(db, actor, item.project_id)
        # No derived label: an annotator who saw the crowd's answer would echo it.
        return LabelledItemOut.model_validate(item)
    described = derive(db, project, blobs).describe(item.id, list(project.classes))
    return LabelledItemOut.model_validate(item).model_copy(
        update={"derived": _derived_out(described)}
    )


def _derived_out(described: dict[str, Any] | None) -> DerivedLabelOut | None:
    return DerivedLabelOut(**described) if described is not None else None


@router.get(
    "/items/{item_id}/payload",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}},
)
def get_payload(item_id: IdPath, db: DbSession, actor: CurrentUser, blobs: Blobs) -> Response:
    item, _ = projects.get_visible_item(db, actor, item_id)
    # An annotator sees what they are asked to label (a live lease, the page's `?ahead=1`
    # prefetch included) or labelled, never a test item: the test split measures the model
    # and must stay unseen.
    if actor.role is Role.annotator and (
        item.split is Split.test
        or not repository.annotator_has_seen(db, item.id, actor.id, utcnow())
    ):
        raise Forbidden("annotators may read only the payloads of items leased to them")
    # The bytes, not a file path, so a bucket serves as well as a folder; a payload is one
    # image or feature vector, small enough to hold.
    return Response(
        blobs.get(item.blob_sha256),
        media_type=item.media_type,
        headers={
            "ETag": f'"{item.blob_sha256}"',
            # Content-addressed: the bytes behind an item never change.
            "Cache-Control": "private, max-age=31536000, immutable",
            # Served as the type sniffed at upload and never rendered as a page, even if the
            # bytes also parse as HTML (a PNG with a document appended): the browser must not
            # sniff, may only save it, and a sandbox leaves any markup no script or origin.
            "Content-Disposition": f'attachment; filename="item-{item.id}"',
            "Content-Security-Policy": "default-src 'none'; sandbox; frame-ancestors 'none'",
        },
    )
