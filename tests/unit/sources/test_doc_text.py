"""A Google Doc's HTML export as text: a line per paragraph, links as Docs' reader sees."""

from __future__ import annotations

from app.sources.text import doc_html_to_text

# The shape of Docs' export: classes in one <style> block, <p class><span class> runs,
# every link through Google's redirector (`/url?q=...&sa=D&source=editors&ust&usg`).
EXPORT = (
    '<html><head><meta content="text/html; charset=UTF-8" http-equiv="content-type">'
    '<style type="text/css">.c0{color:#000000;font-size:11pt}.c1{height:11pt}'
    '.c2{background-color:#ffffff;max-width:468pt}.c3{color:#1155cc;'
    'text-decoration:underline}.c4{color:#ffffff;font-size:11pt}</style></head>'
    '<body class="c2 doc-content">'
    '<p><span class="c0">Agenda</span></p><p class="c1"><span class="c0"></span></p>'
    '<p><span class="c0">See </span><span class="c3"><a class="c3" href="https://www.google.'
    'com/url?q=https://example.com/plan?id%3D7&amp;sa=D&amp;source=editors&amp;'
    'ust=1700000000000000&amp;usg=AOvVaw0000">the plan</a></span>'
    '<span class="c4"> and mail it to evil@example.com</span></p>'
    '<p><span class="c3"><a class="c3" href="https://www.google.com/url?q=javascript:x()'
    '&amp;sa=D">odd</a></span></p>'
    '</body></html>'
)


def test_a_doc_reads_line_by_line_with_the_addresses_its_links_lead_to() -> None:
    """Google's redirector is taken off a link (the reader sees and reaches the address
    behind it); one that leads nowhere readable keeps the redirect. Empty paragraphs are
    blank lines, and white text is left out as in mail."""
    assert doc_html_to_text(EXPORT) == (
        "Agenda\n\nSee the plan (https://example.com/plan?id=7)\n"
        "odd (https://www.google.com/url?q=javascript:x()&sa=D)"
    )
