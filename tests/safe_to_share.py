"""Helpers of the safe-to-share scans (market reports and partner packets): read a rendered page's tables
and the identifiers of the sample, as a reader of the page could."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from carequal.presentation import COUNT_LABELS


class HtmlTables(HTMLParser):
    """Every <table> of a page as header + rows of cell text."""

    def __init__(self):
        super().__init__()
        self.tables, self._row, self._cell, self._in_table = [], None, None, 0

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
            self._in_table += 1
        elif tag == "tr" and self._in_table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None
        elif tag == "table":
            self._in_table -= 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def sample_identifiers(sample: Path) -> set[str]:
    """Every patient, stay and visit id of a contract-table folder."""
    ids = set(pd.read_csv(sample / "patients.csv", usecols=["patient_id"], dtype=str)["patient_id"])
    ids |= set(pd.read_csv(sample / "stays.csv", usecols=["stay_id"], dtype=str)["stay_id"])
    ids |= set(pd.read_csv(sample / "ed_visits.csv", usecols=["visit_id"], dtype=str)["visit_id"])
    return ids


def identifiers_in(text: str) -> set[str]:
    """Tokens of a text that look like the sample's identifiers: ``[A-Za-z]?\\d{5,}`` and ``[A-Z]\\w*\\d{4,}``.

    The second is searched word by word (runs of ``\\w``), in the words holding four digits in a row only: every
    character it matches is a word character and it holds four digits, so each of its matches lies in one such word,
    and it has no anchor or lookaround, so a word searched alone gives the matches the whole text gives there (the
    same set, ``_same_as_whole_text`` checks it). Searched in the whole text, it backtracks through every word of a
    page's base64 charts (about 1.3 s a report, against 0.05 s)."""
    return set(re.findall(r"[A-Za-z]?\d{5,}", text)) | {
        token for word in re.findall(r"\w+", text) if _FOUR_DIGITS.search(word)
        for token in _CAPITAL_THEN_DIGITS.findall(word)}


_FOUR_DIGITS, _CAPITAL_THEN_DIGITS = re.compile(r"\d{4}"), re.compile(r"[A-Z]\w*\d{4,}")


def _same_as_whole_text(text: str) -> bool:
    """``identifiers_in`` gives what the two patterns give searched in the whole text."""
    return identifiers_in(text) == set(re.findall(r"[A-Za-z]?\d{5,}", text)) | set(
        re.findall(r"[A-Z]\w*\d{4,}", text))


def small_counts_in_tables(html: str, *, where: str) -> int:
    """Assert no table column named as a count shows 1 to 10; returns the number of count cells read."""
    parser = HtmlTables()
    parser.feed(html)
    checked = 0
    count_headers = set(COUNT_LABELS.values())
    for table in parser.tables:
        header = table[0]
        for j, name in enumerate(header):
            if name not in count_headers:
                continue
            for row in table[1:]:
                text = row[j].replace(",", "")
                if text.isdigit():
                    checked += 1
                    assert not 1 <= int(text) <= 10, f"{where}: {name} = {text}"
                else:
                    assert text in ("suppressed", ""), f"{where}: {name} = {row[j]!r}"
    return checked
