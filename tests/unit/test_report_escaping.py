"""Names and reasons come from sites and their files; the report pages show them as text, never as markup: a
hostile site name, reason or case id is escaped exactly once (a browser reads back the original string)."""

import json
from html.parser import HTMLParser

import numpy as np
import pytest
from run_folder_builder import REPORTING_SITE, SUPPRESSED_SITE, fake_run

from models.shared.wire import COUNTS, METRICS, region_key
from server_app.report.content import report_data
from server_app.report.html_page import render_report
from site_app.learning.validation import CaseEvaluation
from site_app.tools.site_report import CaseRow, render_site_report

HOSTILE_SITE = '<script>alert("site&co")</script>'
HOSTILE_REASON = 'n < 5" onmouseover="alert(\'&\')" <b>'
HOSTILE_CASE = 'case"><img src=x onerror="alert(1)">'
REGIONS = {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}


class Page(HTMLParser):
    """The tags (with their attributes) and the text of each element with a class, as a browser reads them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[str | None] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in ("br", "img", "meta"):
            self._open.append(dict(attrs).get("class") or tag)

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open:
            self.texts.setdefault(self._open[-1], []).append(data)


@pytest.fixture(scope="module")
def federation_page(tmp_path_factory) -> str:
    """The federation report of a run whose reporting site has a hostile name and whose other site a hostile
    reason for sending no numbers."""
    data = report_data(fake_run(tmp_path_factory.mktemp("run") / "run-1"))
    text = json.dumps(data).replace(REPORTING_SITE, json.dumps(HOSTILE_SITE)[1:-1])
    data = json.loads(text)
    suppressed = next(site for site in data["sites"] if site["name"] == SUPPRESSED_SITE)
    suppressed["note"] = f"suppressed ({HOSTILE_REASON})"
    offline = {"status": "offline", "reason": HOSTILE_REASON, "train": "offline", "evaluate": "offline"}
    data["participation"]["sites"][SUPPRESSED_SITE]["1"] |= offline
    return render_report(data)


def test_a_hostile_site_name_is_text_in_the_federation_report(federation_page):
    page = Page(federation_page)
    assert "script" not in {tag for tag, _ in page.tags}
    assert (
        "<script" not in federation_page and "&lt;script&gt;alert(&#34;site&amp;co&#34;)" in federation_page
    )
    names = page.texts["site-name"]
    assert names.count(HOSTILE_SITE) >= 5  # summary, participation, tables, data overview, software
    assert set(names) == {HOSTILE_SITE, SUPPRESSED_SITE}  # escaped once: no "&amp;lt;" shown


def test_a_hostile_reason_is_text_in_the_federation_report(federation_page):
    page = Page(federation_page)
    assert all("onmouseover" not in attrs for _, attrs in page.tags)
    assert f"suppressed ({HOSTILE_REASON})" in page.texts["suppressed"]
    assert any(HOSTILE_REASON in text for text in page.texts["small"])  # the participation cell
    assert "&#34; onmouseover=&#34;alert(&#39;&amp;&#39;)&#34; &lt;b&gt;" in federation_page


def evaluated(case_id: str) -> CaseEvaluation:
    metrics = {region_key(m, r): 0.5 for m in METRICS for r in REGIONS}
    metrics |= {region_key(c, r): 1.0 for c in COUNTS for r in REGIONS}
    volume = np.zeros((2, 2, 2))
    return CaseEvaluation(case_id, (1.0, 1.0, 2.5), metrics, volume, volume, volume)


def test_hostile_case_ids_and_problems_are_text_in_the_site_report():
    rows = [
        CaseRow(HOSTILE_CASE, evaluated(HOSTILE_CASE), b"\x89PNG", ""),
        CaseRow("case-2", None, b"", f"ValueError: {HOSTILE_REASON}"),
    ]
    header = {"site": HOSTILE_SITE, "model": "global-latest.pt", "generated": "now"}
    html = render_site_report(rows, REGIONS, header)
    page = Page(html)
    assert "script" not in {tag for tag, _ in page.tags} and "<script" not in html
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert images == [{"alt": f"{HOSTILE_CASE} overlays", "src": "data:image/png;base64,iVBORw=="}]
    assert page.texts["h1"] == [f"Site validation report: {HOSTILE_SITE}"]
    assert page.texts["title"] == [f"Site report: {HOSTILE_SITE}"]
    assert f"not validated: ValueError: {HOSTILE_REASON}" in page.texts["td"]
    assert HOSTILE_CASE in page.texts["a"]  # the table's link to the overlay
