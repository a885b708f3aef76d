"""Run ``gcp-storage-emulator`` with the parts of the GCS JSON API that TensorStore relies on.

gcp-storage-emulator (2026.7.19) serves gcsfs (hence orbax and etils.epath) as it is. TensorStore's
``gcs`` kvstore needs three things it lacks; this launcher adds them, as the GCS JSON API
documents them, around the emulator's own handlers and storage, and runs it unchanged otherwise:

1. objects.list ``startOffset`` / ``endOffset``: TensorStore lists a key range with them
   (``GET /storage/v1/b/B/o?startOffset=s/shards/&endOffset=s/shards/%C3%BF``, no ``prefix``).
   The emulator ignores both and returns the whole bucket: TensorStore then yields keys outside
   the range, or aborts the process (``std::out_of_range`` in ``basic_string_view::substr``)
   when a returned name is shorter than the kvstore's path prefix. Real GCS returns the objects
   whose names are lexicographically >= startOffset and < endOffset.
2. ``x-goog-generation`` / ``x-goog-metageneration`` headers on media downloads
   (``GET .../o/NAME?alt=media``): TensorStore reads the object's generation from them and fails
   every read-modify-write of an existing object (a zarr chunk shared by two shards) with
   "Malformed StorageGeneration" without them.
3. The preconditions ``ifGenerationMatch`` / ``ifGenerationNotMatch`` (0 = "does not exist")
   on uploads and downloads: 412 Precondition Failed (uploads, match), 304 Not Modified
   (downloads, not-match). TensorStore's conditional writes and cache revalidation use them; the
   emulator ignores them (writes would succeed unconditionally). The server is single-threaded,
   so check-then-write is atomic.
4. Suffix byte ranges (``Range: bytes=-N``, the last N bytes; the whole object when it is
   shorter): TensorStore reads a zarr3 shard's index this way. The emulator only parses
   ``bytes=a-b`` and answers a suffix range with the whole object (200), which TensorStore
   rejects ("Requested byte range [-4194308, ?) was ignored by server").

    python tests/gcs_emulator.py start --port 9023 --in-memory --default-bucket b
"""

from __future__ import annotations

import re
import sys
from http import HTTPStatus

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_ls, _download, _insert = objects.ls, objects.download, objects.insert


def _first(query: dict, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _generation(storage, bucket: str, name: str) -> str:
    try:
        return str(storage.get_file_obj(bucket, name)["generation"])
    except NotFound:
        return "0"


def _precondition(request, storage, name: str) -> HTTPStatus | None:
    """412 / 304 when ``ifGenerationMatch`` / ``ifGenerationNotMatch`` do not hold, else None."""
    match = _first(request.query, "ifGenerationMatch")
    not_match = _first(request.query, "ifGenerationNotMatch")
    if match is None and not_match is None:
        return None
    current = _generation(storage, request.params["bucket_name"], name)
    if match is not None and match != current:
        return HTTPStatus.PRECONDITION_FAILED
    if not_match is not None and not_match == current:
        return HTTPStatus.NOT_MODIFIED if request.method == "GET" else HTTPStatus.PRECONDITION_FAILED
    return None


def _refuse(response, status: HTTPStatus) -> None:
    response.status = status
    if status != HTTPStatus.NOT_MODIFIED:
        response.json({"error": {"code": status.value, "message": status.phrase}})


def ls(request, response, storage, *args, **kwargs):
    start, end = _first(request.query, "startOffset"), _first(request.query, "endOffset")
    if start is not None or end is not None:
        send = response.json

        def filtered(body):
            body = dict(body)
            body["items"] = [o for o in body.get("items") or []
                             if (start is None or o["name"] >= start)
                             and (end is None or o["name"] < end)]
            send(body)

        response.json = filtered
    return _ls(request, response, storage, *args, **kwargs)


def download(request, response, storage, *args, **kwargs):
    bucket, name = request.params["bucket_name"], request.params["object_id"]
    status = _precondition(request, storage, name)
    if status is not None:
        return _refuse(response, status)
    try:
        obj = storage.get_file_obj(bucket, name)
    except NotFound:
        return _download(request, response, storage, *args, **kwargs)
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
    suffix = re.fullmatch(r"\s*bytes=-([0-9]+)\s*", request.get_header("range", "") or "")
    data = storage.get_file(bucket, name) if suffix else b""
    if not data:  # no suffix range (or an empty object): the emulator's own answer
        return _download(request, response, storage, *args, **kwargs)
    start = max(0, len(data) - int(suffix.group(1)))
    response.status = HTTPStatus.PARTIAL_CONTENT
    response["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
    response.write_file(data[start:], content_type=obj.get("contentType"))


def insert(request, response, storage, *args, **kwargs):
    name = _first(request.query, "name")
    if name is not None:
        status = _precondition(request, storage, name)
        if status is not None:
            return _refuse(response, status)
    return _insert(request, response, storage, *args, **kwargs)


# before the server module builds its routing table from these names
objects.ls, objects.download, objects.insert = ls, download, insert

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main

    main(sys.argv[1:])
