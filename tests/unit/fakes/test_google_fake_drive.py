"""The fake's Drive v3 through google-api-python-client: files, export, media, changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from .conftest import ALICE

DOC = "application/vnd.google-apps.document"
FOLDER = "application/vnd.google-apps.folder"


def _error(exc: HttpError) -> dict:
    return json.loads(exc.content)["error"]


def _names(drive, **kwargs) -> set[str]:
    return {f["name"] for f in drive.files().list(**kwargs).execute()["files"]}


def test_list_defaults_and_fields(fake, drive):
    listed = drive.files().list().execute()
    assert listed["kind"] == "drive#fileList"
    assert all(f.keys() == {"kind", "id", "name", "mimeType"} for f in listed["files"])
    narrow = drive.files().list(fields="files(id, name, modifiedTime, parents)").execute()
    assert narrow.keys() == {"files"}
    assert all(f.keys() == {"id", "name", "modifiedTime", "parents"} for f in narrow["files"])
    with pytest.raises(HttpError) as caught:
        drive.files().list(fields="files(id,colour)").execute()
    assert caught.value.status_code == 400


@pytest.mark.parametrize(("query", "names"), [
    ("name contains 'Launch'", {"Launch plan"}),
    ("name contains 'plan'", {"Launch plan"}),
    ("fullText contains 'domain'", {"notes.txt"}),
    (f"mimeType = '{FOLDER}'", {"Projects"}),
    (f"mimeType != '{FOLDER}' and name contains 'K'", {"Kickoff deck"}),
    ("name = 'notes.txt' or name = 'Contract.pdf'", {"notes.txt", "Contract.pdf"}),
    ("'root' in parents and trashed = false", {"Projects", "notes.txt", "Contract.pdf"}),
    ("not name contains 'Launch' and fullText contains 'Bob'", set()),
    ("mimeType contains 'spreadsheet' and 'me' in owners", {"Budget 2026"}),
    ("sharedWithMe = true", set()),
    ("sharedWithMe = false and name contains 'Launch'", {"Launch plan"}),
    ("visibility != 'anyoneWithLink' and name = 'notes.txt'", {"notes.txt"}),
    ("shortcutDetails.targetId = 'x'", set()),
])
def test_query_language(fake, drive, query, names):
    assert _names(drive, q=query) == names


def test_query_by_folder_and_time(fake, drive):
    folder = next(f for f in drive.files().list(q=f"mimeType = '{FOLDER}'").execute()["files"])
    assert _names(drive, q=f"'{folder['id']}' in parents") == \
        {"Launch plan", "Budget 2026", "Kickoff deck"}
    recent = _names(drive, q="modifiedTime > '2000-01-01T00:00:00' and trashed = false")
    assert "notes.txt" in recent
    assert _names(drive, q="modifiedTime > '2999-01-01T00:00:00Z'") == set()


@pytest.mark.parametrize("query", ["name has 'x'", "name contains x", "colour = 'red'",
                                   "(name = 'a'", "name = 'a' and", "sharedWithMe = 'yes'",
                                   "visibility contains 'any'"])
def test_bad_queries_are_400(fake, drive, query):
    with pytest.raises(HttpError) as caught:
        drive.files().list(q=query).execute()
    assert caught.value.status_code == 400
    assert _error(caught.value)["errors"][0]["location"] == "q"


def test_full_text_queries_cannot_be_sorted(fake, drive):
    """Drive orders fullText matches by relevance and answers 403 to an orderBy with them
    (the answer n8n-io/n8n#4874 and a-bonus/google-docs-mcp#155 quote); a fullText inside a
    string is no fullText term."""
    with pytest.raises(HttpError) as caught:
        drive.files().list(q="fullText contains 'domain'", orderBy="modifiedTime desc").execute()
    assert caught.value.status_code == 403
    error = _error(caught.value)["errors"][0]
    assert (error["reason"], error["location"]) == ("forbidden", "orderBy")
    assert error["message"].startswith("Sorting is not supported for queries with fullText")
    assert _names(drive, q="fullText contains 'domain'") == {"notes.txt"}
    assert _names(drive, q="name contains 'fullText'", orderBy="name") == set()


def test_paging_needs_next_page_token_in_fields(fake, drive):
    seen: list[str] = []
    request = drive.files().list(pageSize=2, orderBy="name",
                                 fields="nextPageToken,files(id,name)")
    while request is not None:
        page = request.execute()
        seen += [f["name"] for f in page["files"]]
        request = drive.files().list_next(request, page)
    assert seen == sorted(seen, key=str.lower)
    assert len(seen) == 6
    with pytest.raises(HttpError):
        drive.files().list(orderBy="colour").execute()


def test_media_and_export(fake, drive):
    text_id = fake.add_file(ALICE, name="a.txt", mime_type="text/plain", content="hello\n")
    doc_id = fake.add_file(ALICE, name="Doc", mime_type=DOC, content="Line one\nLine two")
    assert drive.files().get_media(fileId=text_id).execute() == b"hello\n"
    exported = drive.files().export(fileId=doc_id, mimeType="text/plain").execute()
    assert exported.decode("utf-8") == "\ufeffLine one\nLine two"  # Docs add a BOM
    pdf = drive.files().export(fileId=doc_id, mimeType="application/pdf").execute()
    assert pdf.startswith(b"%PDF-")
    with pytest.raises(HttpError) as caught:
        drive.files().get_media(fileId=doc_id).execute()
    assert caught.value.status_code == 403
    assert _error(caught.value)["errors"][0]["reason"] == "fileNotDownloadable"
    with pytest.raises(HttpError) as caught:
        drive.files().export(fileId=text_id, mimeType="text/plain").execute()
    assert caught.value.status_code == 403
    with pytest.raises(HttpError) as caught:
        drive.files().export(fileId=doc_id, mimeType="image/gif").execute()
    assert caught.value.status_code == 400
    with pytest.raises(HttpError) as caught:
        drive.files().get(fileId="missing").execute()
    assert caught.value.status_code == 404


def test_a_doc_exports_as_html_the_way_docs_writes_it(fake, drive):
    """Docs' HTML export: one <style> block of classes, a body of <p class><span class>
    runs, no inline style; a run's formatting is its class's. The text/plain export
    holds every run's text, formatting ignored. Slides offer no HTML: 400."""
    doc_id = fake.add_file(ALICE, name="Doc", mime_type=DOC, paragraphs=[
        [("Seen ", ""), ("unseen", "color:#ffffff")], [], [("Tiny", "font-size:1pt")],
    ])
    exported = drive.files().export(fileId=doc_id, mimeType="text/html").execute().decode()
    assert exported.startswith('<html><head><meta content="text/html; charset=UTF-8"')
    assert '<style type="text/css">' in exported
    assert "style=" not in exported.split("</head>")[1]
    assert 'doc-content">' in exported
    assert ";color:#ffffff;" not in exported  # the default colour, overridden in place
    assert "{color:#ffffff;font-weight:400;" in exported
    assert "font-size:1pt;" in exported
    assert '<span class="c3">Seen </span><span class="c4">unseen</span>' in exported
    assert "<p class=\"c2\"><span class=\"c3\"></span></p>" in exported  # empty line
    plain = drive.files().export(fileId=doc_id, mimeType="text/plain").execute()
    assert plain.decode("utf-8") == "\ufeffSeen unseen\n\nTiny"
    slides = fake.add_file(ALICE, name="Deck", content="Slide one",
                           mime_type="application/vnd.google-apps.presentation")
    with pytest.raises(HttpError) as caught:
        drive.files().export(fileId=slides, mimeType="text/html").execute()
    assert caught.value.status_code == 400
    assert _error(caught.value)["errors"][0]["reason"] == "badRequest"


def test_changes_feed(fake, drive):
    token = drive.changes().getStartPageToken().execute()["startPageToken"]
    empty = drive.changes().list(pageToken=token).execute()
    assert empty["changes"] == []
    assert empty["newStartPageToken"] == token
    first = fake.add_file(ALICE, name="One", content="1")
    second = fake.add_file(ALICE, name="Two", content="2")
    fake.update_file(ALICE, first, content="1 again")
    third = fake.add_file(ALICE, name="Three", content="3")
    fake.delete_file(ALICE, third)

    seen: list[dict] = []
    pages = []
    page_token = token
    while True:
        page = drive.changes().list(
            pageToken=page_token, pageSize=2,
            fields="nextPageToken,newStartPageToken,changes(fileId,removed,time,file(name))",
        ).execute()
        pages.append(page)
        seen += page["changes"]
        if "newStartPageToken" in page:
            break
        page_token = page["nextPageToken"]
    # A file shows once, at its latest change; newStartPageToken only on the last page.
    assert [c["fileId"] for c in seen] == [second, first, third]
    assert [c["removed"] for c in seen] == [False, False, True]
    assert seen[1]["file"] == {"name": "One"}
    assert "file" not in seen[2]
    assert all("newStartPageToken" not in p for p in pages[:-1])
    assert all("nextPageToken" not in p for p in pages[-1:])
    later = drive.changes().list(pageToken=pages[-1]["newStartPageToken"]).execute()
    assert later["changes"] == []


def test_shared_drive_items_need_the_callers_opt_in(fake, drive):
    """As in Drive: a shared-drive file is a 404 to files.get and missing from lists and
    changes unless the call says supportsAllDrives (and includeItemsFromAllDrives)."""
    start = drive.changes().getStartPageToken(supportsAllDrives=True).execute()
    token = start["startPageToken"]
    team = fake.add_shared_drive(ALICE, "Team")
    folder = fake.add_file(ALICE, name="Plans", mime_type=FOLDER, parents=(team,))
    doc = fake.add_file(ALICE, name="Team plan", mime_type=DOC, content="Ship it.",
                        parents=(folder,))
    text = fake.add_file(ALICE, name="team.txt", mime_type="text/plain", content="hi",
                         parents=(team,))

    for file_id in (doc, text):
        with pytest.raises(HttpError) as caught:
            drive.files().get(fileId=file_id).execute()
        assert caught.value.status_code == 404
    with pytest.raises(HttpError) as caught:
        drive.files().get_media(fileId=text).execute()
    assert caught.value.status_code == 404
    got = drive.files().get(fileId=doc, supportsAllDrives=True,
                            fields="id,driveId,parents,owners").execute()
    assert got == {"id": doc, "driveId": team, "parents": [folder]}
    assert drive.files().get_media(fileId=text, supportsAllDrives=True).execute() == b"hi"
    # files.export has no supportsAllDrives parameter, and needs none.
    exported = drive.files().export(fileId=doc, mimeType="text/plain").execute()
    assert exported.endswith(b"Ship it.")

    q = "name contains 'team'"
    assert _names(drive, q=q) == set()
    assert _names(drive, q=q, supportsAllDrives=True, includeItemsFromAllDrives=True) == set()
    everywhere = {"supportsAllDrives": True, "includeItemsFromAllDrives": True}
    assert _names(drive, q=q, corpora="allDrives", **everywhere) == {"Team plan", "team.txt"}
    assert _names(drive, q=f"'{folder}' in parents", corpora="allDrives", **everywhere) == \
        {"Team plan"}
    assert _names(drive, corpora="drive", driveId=team, **everywhere) == \
        {"Plans", "Team plan", "team.txt"}
    with pytest.raises(HttpError) as caught:
        drive.files().list(corpora="allDrives").execute()
    assert caught.value.status_code == 403
    with pytest.raises(HttpError) as caught:
        drive.files().list(corpora="drive", **everywhere).execute()
    assert caught.value.status_code == 400

    def changed(**kwargs):
        return {c["fileId"] for c in
                drive.changes().list(pageToken=token, **kwargs).execute()["changes"]}

    assert changed() == set()
    assert changed(supportsAllDrives=True, includeItemsFromAllDrives=True) == \
        {folder, doc, text}


def test_moves_stars_and_old_uploads_keep_modified_time_as_on_drive(fake, drive):
    """A move changes only parents, starring only the user's flag: Drive reports both in
    the change list with modifiedTime as it was. An upload that sets its own modifiedTime
    is created when uploaded."""
    folder = fake.add_file(ALICE, name="Box", mime_type=FOLDER)
    when = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    old = fake.add_file(ALICE, name="Scan", content="s", modified=when)
    fields = "createdTime,modifiedTime,parents,starred"
    before = drive.files().get(fileId=old, fields=fields).execute()
    assert before["modifiedTime"] == "2026-01-05T09:30:00.000Z"
    assert before["createdTime"] > before["modifiedTime"]

    token = drive.changes().getStartPageToken().execute()["startPageToken"]
    fake.update_file(ALICE, old, parents=[folder])
    fake.star_file(ALICE, old)
    after = drive.files().get(fileId=old, fields=fields).execute()
    assert after == {**before, "parents": [folder], "starred": True}
    (change,) = drive.changes().list(
        pageToken=token, fields="changes(fileId,file(modifiedTime))"
    ).execute()["changes"]
    assert change == {"fileId": old, "file": {"modifiedTime": before["modifiedTime"]}}


def test_changes_need_a_page_token(fake, drive, creds, auth_request, http):
    creds.refresh(auth_request)
    answer = http.get(f"{fake.url}/drive/v3/changes",
                       headers={"Authorization": f"Bearer {creds.token}"})
    assert answer.status_code == 400
    with pytest.raises(HttpError):
        drive.changes().list(pageToken="not-a-token").execute()


def test_drive_batch(fake, drive, endpoints):
    files = drive.files().list().execute()["files"]
    fake.reset_counters()
    names: dict[str, str] = {}

    def collect(request_id, response, exception):
        assert exception is None
        names[response["id"]] = response["name"]

    batch = BatchHttpRequest(callback=collect, batch_uri=endpoints.drive_batch)
    for file in files:
        batch.add(drive.files().get(fileId=file["id"], fields="id,name"))
    batch.execute()
    assert names == {f["id"]: f["name"] for f in files}
    assert fake.batch_sizes == [len(files)]
    assert fake.quota_units(ALICE) == 0  # Drive has no per-call units


def test_about_answers_the_fields_asked_for_and_refuses_a_call_without_them(fake, drive):
    """about.get, as its reference page says ("Required: The fields parameter must be set")
    and as googleapis/google-api-python-client#1742 quotes the refusal."""
    assert drive.about().get(fields="user(emailAddress)").execute() == \
        {"user": {"emailAddress": ALICE}}
    user = drive.about().get(fields="user").execute()["user"]
    assert (user["kind"], user["me"], user["emailAddress"]) == ("drive#user", True, ALICE)
    with pytest.raises(HttpError) as caught:
        drive.about().get().execute()
    error = _error(caught.value)
    assert (error["code"], error["message"]) == \
        (400, "The 'fields' parameter is required for this method.")
    assert error["errors"][0]["reason"] == "required"
    assert error["errors"][0]["location"] == "fields"
    with pytest.raises(HttpError) as caught:
        drive.about().get(fields="user(colour)").execute()
    assert caught.value.status_code == 400
