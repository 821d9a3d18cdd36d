"""The digest: what the model must answer (ids only) and what the app stores (resolved refs).

The model cites raw message and file ids; the app checks each against what
the run really saw and turns it into a `SourceRef` with a link it builds
itself, so a model can neither invent a source nor choose where a link points.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

RefKind = Literal["message", "file"]


# --- What the model writes (the response schema of the final turn) ---------------------------


class DraftItem(BaseModel):
    title: str = Field(description="A subject, a decision or a file.")
    detail: str = Field(description="One sentence: what is new and why it matters.")
    message_ids: list[str] = Field(default_factory=list, description="Cited mail (m1).")
    file_ids: list[str] = Field(default_factory=list, description="Cited documents (f1).")


class DraftSection(BaseModel):
    title: str = Field(description="A heading.")
    items: list[DraftItem]


class DraftActionItem(BaseModel):
    text: str = Field(description="What is to be done, one sentence.")
    owner: str | None = Field(default=None, description='Who ("you": the user).')
    due: str | None = Field(default=None, description="When, as written.")
    message_ids: list[str] = Field(default_factory=list)
    file_ids: list[str] = Field(default_factory=list)


class DigestDraft(BaseModel):
    """The final answer the model gives: cited ids, no links."""

    summary: str = Field(description="Two or three sentences: what is new, what matters most.")
    sections: list[DraftSection]
    action_items: list[DraftActionItem] = Field(default_factory=list)
    notes: list[str] = Field(
        default_factory=list, description="How the digest was made, if it matters; no content."
    )


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline_refs(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _compact(node: Any) -> Any:
    """A schema node without what the model does not need: titles, null defaults, and
    `anyOf [T, null]` (an optional field is simply not required)."""
    if isinstance(node, list):
        return [_compact(v) for v in node]
    if not isinstance(node, dict):
        return node
    options = node.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        kept = next(o for o in options if o != {"type": "null"})
        node = {**{k: v for k, v in node.items() if k != "anyOf"}, **kept}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _compact(v) for name, v in value.items()}
        else:
            out[key] = _compact(value)
    return out


def draft_json_schema() -> dict[str, Any]:
    """The JSON schema of `DigestDraft`, self-contained and compact.

    Structured-output endpoints accept only part of JSON Schema; a self-contained
    schema avoids depending on their `$ref` support. The schema is billed as input on
    every turn, so it carries no titles and short descriptions.
    """
    schema = DigestDraft.model_json_schema()
    compact = _compact(_inline_refs(schema, schema.get("$defs", {})))
    compact.pop("description", None)
    return compact


# --- What the app stores -----------------------------------------------------------------------


class SourceRef(BaseModel):
    """One cited message or file, resolved by the app."""

    kind: RefKind
    id: str
    account: str
    title: str
    link: str | None = None


class DigestItem(BaseModel):
    title: str
    detail: str
    refs: list[SourceRef] = Field(default_factory=list)


class DigestSection(BaseModel):
    title: str
    items: list[DigestItem] = Field(default_factory=list)


class ActionItem(BaseModel):
    text: str
    owner: str | None = None
    due: str | None = None
    refs: list[SourceRef] = Field(default_factory=list)


class CoverWindow(BaseModel):
    """The time span a digest reports on; `start` is None on an instruction's first run."""

    start: datetime | None = None
    end: datetime


class Digest(BaseModel):
    summary: str
    sections: list[DigestSection] = Field(default_factory=list)
    action_items: list[ActionItem] = Field(default_factory=list)
    model: str
    notes: list[str] = Field(default_factory=list)
    covers: CoverWindow


RefResolver = Callable[[RefKind, str], SourceRef | None]


def build_digest(
    draft: DigestDraft,
    *,
    resolve: RefResolver,
    model: str,
    covers: CoverWindow,
    notes: list[str] | None = None,
) -> tuple[Digest, list[str]]:
    """Turn the model's draft into the stored digest; returns it and the ids that were dropped.

    `resolve` answers None for an id the run never saw: such a citation is a
    hallucination and is dropped, the item itself is kept.
    """
    dropped: list[str] = []

    def refs(message_ids: list[str], file_ids: list[str]) -> list[SourceRef]:
        out: list[SourceRef] = []
        cited: list[tuple[RefKind, str]] = [("message", i) for i in message_ids]
        cited += [("file", i) for i in file_ids]
        for kind, ref_id in dict.fromkeys(cited):  # de-duplicated, order kept
            ref = resolve(kind, ref_id)
            if ref is None:
                dropped.append(ref_id)
            else:
                out.append(ref)
        return out

    digest = Digest(
        summary=draft.summary,
        sections=[
            DigestSection(
                title=section.title,
                items=[
                    DigestItem(
                        title=item.title,
                        detail=item.detail,
                        refs=refs(item.message_ids, item.file_ids),
                    )
                    for item in section.items
                ],
            )
            for section in draft.sections
        ],
        action_items=[
            ActionItem(
                text=action.text,
                owner=action.owner,
                due=action.due,
                refs=refs(action.message_ids, action.file_ids),
            )
            for action in draft.action_items
        ],
        model=model,
        notes=[*draft.notes, *(notes or [])],
        covers=covers,
    )
    return digest, dropped
