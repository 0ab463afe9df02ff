"""The sample batch opened in a real browser (headless Chromium): the index and Riverton's report at desktop
(1280 px) and phone (390 px, emulated as a mobile device) width. Every image loads and has alt text that says
what it shows, nothing reaches past the right edge of the page, every in-page link has its target, the report
opens with "At a glance" on its first screen, and the index alone shows Riverton worse than expected on both
readmission measures, with intervals. Screenshots of the first screen are saved as artefacts in
``$CAREQUAL_SCREENSHOTS`` (else the test's temporary folder)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from headless import Browser

VIEWPORTS = {"desktop": (1280, 900, False), "phone": (390, 844, True)}


@pytest.fixture(scope="module")
def browser(rendered_sample):  # rendered_sample first: it skips, saying why, when there is no Chromium
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    chosen = os.environ.get("CAREQUAL_SCREENSHOTS")
    return Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")


@pytest.mark.parametrize("page", ["index.html", "Riverton.html"])
@pytest.mark.parametrize("device", list(VIEWPORTS))
def test_page_in_a_browser(rendered_sample, browser, shots, page, device):
    width, height, mobile = VIEWPORTS[device]
    found = browser.open(rendered_sample / page, width=width, height=height, mobile=mobile).inspect()
    assert found["width"] == width
    assert found["scroll_width"] <= width, f"{page} at {width} px scrolls sideways: {found['overflow']}"
    assert not found["overflow"], f"{page} at {width} px, past the right edge: {found['overflow']}"
    assert not found["broken_links"], found["broken_links"]
    for image in found["images"]:
        assert image["loaded"], image
        alt = (image["alt"] or "").strip()
        assert len(alt) >= 30 and "No description has been provided" not in alt, alt
        assert image["right"] <= width, image
    if page == "Riverton.html":
        assert len(found["images"]) >= 8
        assert 3 <= len(found["glance"]) <= 5, found["glance"]
        assert found["glance_top"] is not None and found["glance_top"] < height  # on the first screen
        assert found["glance"][0].startswith("Worse than expected for these patients: 30-day unplanned "
                                             "readmission (O/E 1.")
    browser.screenshot(shots / f"{Path(page).stem}_{device}.png", width=width, height=height)


def test_the_index_alone_flags_riverton_on_both_readmission_measures(rendered_sample):
    index = (rendered_sample / "index.html").read_text()
    row = re.search(r"<tr><td><b>Riverton</b></td>.*?</tr>", index, flags=re.DOTALL)[0]
    cells = re.findall(r'<td data-label="(30-day[^"]*)">(.*?)</td>', row, flags=re.DOTALL)
    flagged = {label: text for label, text in cells if "Higher than expected" in text}
    assert set(flagged) == {"30-day unplanned readmission", "30-day readmission after post-acute referral"}
    for text in flagged.values():
        assert "▲" in text and re.search(r"O/E 1\.\d\d.*95% CI 1\.\d\d–1\.\d\d", text, flags=re.DOTALL), text
    assert "Needs attention" in index.split("<b>Riverton</b>")[0]
