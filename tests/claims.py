"""What the executed notebooks and the exported report claim, read back from their text.

Two claims are checked wherever they appear:

- a percentile interval: its bounds must be ones the sample can support. Each percentile is
  shown either as a table row with ``q``/``n``/``low``/``high`` columns (``sla.percentiles``, or
  the report's percentile table), or as a sentence made by ``verdicts.describe_percentile``;
  an upper (lower) bound the order statistics of n samples cannot give must read ∞ (−∞);
- a verdict: no PASS beside an INCONCLUSIVE or FAIL (``verdicts.pass_beside_weaker``).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import nbformat

from labkit.analysis.stats import order_stat_bounds

TEXT_KINDS = ("text/plain", "text/markdown", "text/html")
# The sentence form of verdicts.describe_percentile: "p99 0.101 s (95% bounds 0.076 s – ∞, n=20)".
SENTENCE = re.compile(r"\bp(?P<q>\d+(?:\.\d+)?) \S+(?: s)? \((?P<conf>\d+(?:\.\d+)?)% bounds (?P<low>\S+?)(?: s)? – "
                      r"(?P<high>\S+?)(?: s)?, n=(?P<n>\d+)\)")
UNBOUNDED = {"∞", "inf", "−∞", "-∞", "-inf"}


def notebook_text(notebook: nbformat.NotebookNode) -> str:
    """Everything the executed notebook showed: streams and each output's text forms."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            data = output.get("data", {})
            parts += [data[kind] if isinstance(data[kind], str) else "".join(data[kind])
                      for kind in TEXT_KINDS if kind in data]
    return "\n".join(parts)


def _quantile(label: str) -> float:
    return float(label.lstrip("p")) / 100 if str(label).startswith("p") else float(label)


def unsupported(q: float, n: int, low: str, high: str, confidence: float = 0.95) -> str | None:
    """Why this interval claims more than n samples support, or None when it does not."""
    lower, upper = order_stat_bounds(n, q, confidence)
    if upper is None and high.strip() not in UNBOUNDED:
        return f"p{q * 100:g} from n={n} shows the upper bound {high}, but {n} samples cannot bound it (∞)"
    if lower is None and low.strip() not in UNBOUNDED:
        return f"p{q * 100:g} from n={n} shows the lower bound {low}, but {n} samples cannot bound it (−∞)"
    return None


class _Tables(HTMLParser):
    """Every HTML table as (header, rows of cell texts)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[list[str], list[list[str]]]] = []
        self._cell: list[str] | None = None
        self._row: list[str] = []
        self._in_head = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append(([], []))
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self.tables:
            header, rows = self.tables[-1]
            (header.extend(self._row) if self._in_head and not header else rows.append(self._row))

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _frame_problems(header: list[str], rows: list[list[str]]) -> list[str]:
    """A pandas table with q, n, low and high columns (an index column may come first)."""
    if not {"q", "n", "low", "high"} <= set(header):
        return []
    problems = []
    for row in rows:
        cells = dict(zip(header[-len(row):], row)) if len(row) <= len(header) else dict(zip(header, row[1:]))
        if all(k in cells for k in ("q", "n", "low", "high")):
            problems.append(unsupported(_quantile(cells["q"]), int(float(cells["n"])), cells["low"], cells["high"]))
    return [p for p in problems if p]


def interval_problems(text: str) -> list[str]:
    """Every percentile interval in ``text`` (tables and sentences) whose bound its n cannot support."""
    problems = []
    for match in SENTENCE.finditer(text):
        problems.append(unsupported(float(match["q"]) / 100, int(match["n"]), match["low"], match["high"],
                                    float(match["conf"]) / 100))
    parser = _Tables()
    parser.feed(text)
    for header, rows in parser.tables:
        problems += _frame_problems(header, rows)
    return [p for p in problems if p]


def report_interval_problems(page: str) -> list[str]:
    """The report's percentile table: per row, its n and a "low – high" range under each of p50, p95, p99."""
    parser = _Tables()
    parser.feed(page)
    problems = []
    for header, rows in parser.tables:
        quantiles = [h for h in header if re.fullmatch(r"p\d+(\.\d+)?", h)]
        if not quantiles or "images" not in header:
            continue
        for row in rows:
            n = int(row[header.index("images")])
            for label in quantiles:
                low, high = _range(row[header.index(label)])
                problems.append(unsupported(_quantile(label), n, low, high))
    return [p for p in problems if p]


def _range(cell: str) -> tuple[str, str]:
    """ "0.42 0.31 – ∞" (the estimate, then the range) as ("0.31", "∞")."""
    low, high = cell.rsplit(" – ", 1)
    return low.split()[-1], high.split()[0]

