"""Drive v3: files (list, get, alt=media, export), changes (startPageToken, list) and
about.get."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from .calls import Call
from .docs_html import export_html, paragraphs_of
from .errors import ApiError, Reply, insufficient_scopes
from .query import drive_query, has_full_text
from .store import FOLDER, GOOGLE_APPS, DriveFile

EXPORTS = {
    GOOGLE_APPS + "document": ("text/plain", "text/html", "text/markdown", "application/pdf"),
    GOOGLE_APPS + "spreadsheet": ("text/csv", "text/tab-separated-values", "application/pdf"),
    GOOGLE_APPS + "presentation": ("text/plain", "application/pdf"),
}
EXPORT_LIMIT = 10 * 1024 * 1024
ORDER_KEYS = {"createdTime", "folder", "modifiedByMeTime", "modifiedTime", "name",
              "name_natural", "quotaBytesUsed", "recency", "sharedWithMeTime", "starred",
              "viewedByMeTime"}
DEFAULT_FILE = ("kind", "id", "name", "mimeType")
METADATA_ONLY = frozenset({
    "https://www.googleapis.com/auth/drive.metadata.readonly",
    "https://www.googleapis.com/auth/drive.metadata",
})


def _invalid(location: str, message: str = "Invalid Value") -> ApiError:
    return ApiError(400, "invalid", message, location=location, location_type="parameter")


def _public(file: dict[str, Any], fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    visible = {k: v for k, v in file.items() if not k.startswith("_")}
    if fields is not None:
        return {k: visible[k] for k in fields if k in visible}
    return visible


# Shared drives, as the "Implement shared drive support" guide and the bundled discovery
# document (both flags default to false) describe them, and as callers report:
# - files.get (and alt=media) on a shared-drive file without supportsAllDrives=true is a 404
#   "File not found" (seattleflu/id3c#214);
# - files.export has no supportsAllDrives parameter (not in the discovery document; an
#   export of a shared-drive Doc works without it: taylorwilsdon/google_workspace_mcp#325);
# - files.list leaves shared-drive items out unless includeItemsFromAllDrives=true
#   (gimite/google-drive-ruby#367), and corpora=drive / allDrives or a driveId without it is a
#   403 (nithinmurali/pygsheets#437; its reason string is not documented: ours is a guess);
#   a driveId goes with corpora=drive and only with it (the API rejects allDrives + driveId
#   with "driveId must be specified if and only if corpora is set to drive");
# - changes.list leaves them out unless includeItemsFromAllDrives=true; without a driveId it
#   reads the user's change log, which "includes changes to shared drives they're a member
#   of" ("Track changes for users and shared drives").
# Items are shown only with both flags: a caller that does not say supportsAllDrives does not
# handle shared drives. The fake does not model per-drive change logs (driveId on changes).
CORPORA = ("user", "domain", "drive", "allDrives")


def _all_drives(call: Call) -> bool:
    return bool(call.query.get("supportsAllDrives"))


def _from_all_drives(call: Call) -> bool:
    return _all_drives(call) and bool(call.query.get("includeItemsFromAllDrives"))


def _file(call: Call) -> DriveFile:
    file = call.account.drive.files.get(call.path["fileId"])
    if file is not None and file.drive_id is not None and call.method.id != "drive.files.export":
        if not _all_drives(call):
            file = None
    if file is None:
        message = f"File not found: {call.path['fileId']}."
        raise ApiError(404, "notFound", message, location="fileId", location_type="parameter")
    return file


def _offset(call: Call) -> int:
    token = call.query.get("pageToken")
    if not token:
        return 0
    if not token.startswith("~!!~") or not token[4:].isdigit():
        raise _invalid("pageToken")
    return int(token[4:])


def _sort(files: list[dict[str, Any]], order_by: str | None) -> list[dict[str, Any]]:
    keys = [k.strip() for k in (order_by or "folder,modifiedTime desc,name").split(",")]
    for key in reversed(keys):
        name, _, direction = key.partition(" ")
        if name not in ORDER_KEYS or direction.strip() not in ("", "desc"):
            raise _invalid("orderBy", f"Invalid Value: {order_by}")
        reverse = direction.strip() == "desc"

        def value(f: dict[str, Any], name: str = name) -> Any:
            if name == "folder":
                return 0 if f["mimeType"] == FOLDER else 1
            if name in ("name", "name_natural"):
                return f["name"].lower()
            if name == "recency":
                return f["modifiedTime"]
            if name == "starred":
                return f.get("starred", False)
            return f.get(name, "")

        files = sorted(files, key=value, reverse=reverse)
    return files


def _corpus(call: Call) -> Callable[[DriveFile], bool]:
    """Which files a files.list looks at, from corpora, driveId and the two flags."""
    corpora = call.query.get("corpora") or "user"
    drive_id = call.query.get("driveId")
    if corpora not in CORPORA:
        raise _invalid("corpora", f"Invalid Value: {corpora}")
    if (corpora == "drive") != bool(drive_id):
        raise ApiError(400, "invalid", "The driveId parameter must be specified if and only if "
                       "corpora is set to drive.", location="driveId",
                       location_type="parameter")
    if corpora in ("drive", "allDrives") and not call.query.get("includeItemsFromAllDrives"):
        raise ApiError(403, "teamDriveIncludeItemsRequired",
                       "The includeItemsFromAllDrives parameter must be set to true when driveId "
                       "is specified or corpora contains drive or allDrives.",
                       location="includeItemsFromAllDrives", location_type="parameter")
    if corpora == "drive":
        if drive_id not in call.account.drive.shared_drives:
            raise ApiError(404, "notFound", f"Shared drive not found: {drive_id}",
                           location="driveId", location_type="parameter")
        return lambda f: f.drive_id == drive_id
    shared = corpora == "allDrives" and _from_all_drives(call)
    return lambda f: f.drive_id is None or shared


def list_files(call: Call) -> Reply:
    drive = call.account.drive
    corpus = _corpus(call)
    test = drive_query(call.query["q"], drive.root_id) if call.query.get("q") else None
    if test is not None and call.query.get("orderBy") and has_full_text(call.query["q"]):
        # Drive ranks fullText matches by relevance and refuses any other order (n8n-io/n8n#4874,
        # a-bonus/google-docs-mcp#155 quote this answer).
        raise ApiError(403, "forbidden", "Sorting is not supported for queries with fullText "
                       "terms. Results are always in descending relevance order.",
                       location="orderBy", location_type="parameter")
    files = [f.resource(call.account.email) for f in drive.files.values() if corpus(f)]
    files = _sort([f for f in files if test is None or test(f)], call.query.get("orderBy"))
    size = int(call.query.get("pageSize", 100))
    start = _offset(call)
    page = files[start:start + size]
    default = call.query.get("fields") is None
    answer: dict[str, Any] = {"kind": "drive#fileList", "incompleteSearch": False}
    if start + size < len(files):
        answer["nextPageToken"] = f"~!!~{start + size}"
    answer["files"] = [_public(f, DEFAULT_FILE if default else None) for f in page]
    return call.respond(answer)


def get_file(call: Call) -> Reply:
    file = _file(call)
    if call.query.get("alt") == "media":
        if call.token.scopes <= METADATA_ONLY:
            raise insufficient_scopes()
        if file.mime_type.startswith(GOOGLE_APPS):
            raise ApiError(
                403, "fileNotDownloadable",
                "Only files with binary content can be downloaded. Use Export with Docs "
                "Editors files.", location="alt", location_type="parameter",
            )
        _check_download(call, file)
        return Reply(200, file.content, file.mime_type)
    resource = file.resource(call.account.email)
    default = call.query.get("fields") is None
    return call.respond(_public(resource, DEFAULT_FILE if default else None))


def _check_download(call: Call, file: DriveFile) -> None:
    """Drive's refusals of alt=media for a file that is there, as callers report them
    (403, reason in error.errors[0].reason, domain global):
    - cannotDownloadFile, "This file cannot be downloaded by the user.": a viewer of a
      file whose owner turned off download, print and copy (copyRequiresWriterPermission;
      the fake has no sharing roles: anyone but the owner is a viewer);
    - cannotDownloadAbusiveFile, "This file has been identified as malware or spam and
      cannot be downloaded.": unless acknowledgeAbuse=true, which the files.get reference
      says applies only to the file's owner (prasmussen/gdrive#234, glotlabs/gdrive#136);
    - downloadQuotaExceeded, "The download quota for this file has been exceeded.": too
      many downloads of the file lately, for hours (prasmussen/gdrive#348,
      ivanvermeyen/laravel-google-drive-demo#102)."""
    owner = file.owner == call.account.email
    if file.copy_requires_writer_permission and not owner:
        raise ApiError(403, "cannotDownloadFile", "This file cannot be downloaded by the user.")
    if file.abusive and not (owner and call.query.get("acknowledgeAbuse")):
        raise ApiError(403, "cannotDownloadAbusiveFile",
                       "This file has been identified as malware or spam and cannot be "
                       "downloaded.")
    if file.download_quota_exceeded:
        raise ApiError(403, "downloadQuotaExceeded",
                       "The download quota for this file has been exceeded.")


def export_file(call: Call) -> Reply:
    if call.token.scopes <= METADATA_ONLY:
        raise insufficient_scopes()
    file = _file(call)
    target = call.query["mimeType"]
    formats = EXPORTS.get(file.mime_type)
    if formats is None:
        raise ApiError(403, "fileNotExportable", "Export only supports Docs Editors files.",
                       location="fileId", location_type="parameter")
    if file.copy_requires_writer_permission and file.owner != call.account.email:
        # A viewer of a Doc whose owner turned off download, print and copy: 403
        # cannotExportFile, "This file cannot be exported by the user." (seen in public
        # code handling Drive's answer, e.g. exporters mapping it to "download restricted";
        # the fake has no sharing roles: anyone but the owner is a viewer).
        raise ApiError(403, "cannotExportFile", "This file cannot be exported by the user.")
    if target not in formats:
        raise ApiError(400, "badRequest", "The requested conversion is not supported.",
                       location="convertTo", location_type="parameter")
    text = file.content.decode("utf-8", "replace")
    if target == "text/plain":
        data = ("\ufeff" + text).encode()  # Docs exports start with a byte order mark
    elif target == "text/html":  # offered for Docs only (EXPORTS)
        data = export_html(file.paragraphs or paragraphs_of(text)).encode()
    elif target == "text/tab-separated-values":
        data = text.replace(",", "\t").encode()
    elif target == "application/pdf":
        data = pdf_bytes(text)
    else:
        data = text.encode()
    if len(data) > EXPORT_LIMIT:
        raise ApiError(403, "exportSizeLimitExceeded", "This file is too large to be exported.")
    content_type = target if not target.startswith("text/") else f"{target}; charset=utf-8"
    return Reply(200, data, content_type)


def pdf_bytes(text: str) -> bytes:
    """A small valid one-page PDF showing the first lines of `text`."""
    lines = text.splitlines()[:40] or [""]
    escaped = [ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for ln in lines]
    stream = "BT /F1 11 Tf 50 780 Td 14 TL " + " ".join(f"({ln}) '" for ln in escaped) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream.encode('latin-1', 'replace'))} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1", "replace")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n" \
        .encode()
    return out


def _no_drive_logs(call: Call) -> None:
    if call.query.get("driveId"):
        raise ApiError(400, "invalid", "The fake keeps no per-drive change logs: driveId is not "
                       "modelled.", location="driveId", location_type="parameter")


def start_page_token(call: Call) -> Reply:
    _no_drive_logs(call)
    return call.respond({"kind": "drive#startPageToken",
                         "startPageToken": str(call.account.drive.next_change)})


def list_changes(call: Call) -> Reply:
    _no_drive_logs(call)
    drive = call.account.drive
    token = call.query["pageToken"]
    if not token.isdigit():
        raise _invalid("pageToken")
    start = int(token)
    include_removed = call.query.get("includeRemoved", True)
    latest: dict[str, Any] = {}
    for change in drive.changes:
        if change.id >= start:
            latest.pop(change.file_id, None)
            latest[change.file_id] = change  # a file shows once, at its latest change
    changes = sorted(latest.values(), key=lambda c: c.id)
    if not _from_all_drives(call):  # a shared-drive item's change is not shown at all
        changes = [c for c in changes if c.file_id not in drive.files
                   or drive.files[c.file_id].drive_id is None]
    if not include_removed:
        changes = [c for c in changes if not c.removed and c.file_id in drive.files]
    size = int(call.query.get("pageSize", 100))
    page, rest = changes[:size], changes[size:]
    default = call.query.get("fields") is None
    rendered = []
    for change in page:
        file = drive.files.get(change.file_id)
        entry: dict[str, Any] = {
            "kind": "drive#change", "changeType": "file", "type": "file",
            "time": change.time.strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{change.time.microsecond // 1000:03d}Z",
            "removed": file is None, "fileId": change.file_id,
        }
        if file is not None:
            resource = file.resource(call.account.email)
            entry["file"] = _public(resource, DEFAULT_FILE if default else None)
        rendered.append(entry)
    answer: dict[str, Any] = {"kind": "drive#changeList"}
    if rest:
        answer["nextPageToken"] = str(rest[0].id)
    else:
        answer["newStartPageToken"] = str(drive.next_change)
    answer["changes"] = rendered
    return call.respond(answer)


# about.get answers only what `fields` names, and refuses a call without it: "Required: The
# `fields` parameter must be set" (its reference page, and the bundled discovery document);
# the answer to a call without it is quoted in googleapis/google-api-python-client#1742.
FIELDS_REQUIRED = "The 'fields' parameter is required for this method."


def get_about(call: Call) -> Reply:
    if not call.query.get("fields"):
        raise ApiError(400, "required", FIELDS_REQUIRED, location="fields",
                       location_type="parameter")
    email = call.account.email
    # The About resource in part: the authenticated user (a User resource, `me` true).
    about = {
        "kind": "drive#about",
        "user": {
            "kind": "drive#user", "displayName": email.split("@")[0].title(), "me": True,
            "permissionId": str(int(hashlib.sha256(email.encode()).hexdigest()[:16], 16)),
            "emailAddress": email,
        },
    }
    return call.respond(about)


HANDLERS: dict[str, Callable[[Call], Reply]] = {
    "drive.about.get": get_about,
    "drive.files.list": list_files,
    "drive.files.get": get_file,
    "drive.files.export": export_file,
    "drive.changes.getStartPageToken": start_page_token,
    "drive.changes.list": list_changes,
}
