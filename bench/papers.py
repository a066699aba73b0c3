"""Papers as data: the ``papers:`` section of ``registry.yaml`` (title, authors, venue, year, arXiv/DOI,
link, BibTeX), referenced by id from defense configs and suites (``paper: snn_rat``).

The site links each defense and suite to its paper and offers the BibTeX to copy; ``bench export`` writes
the id. A ``bibtex:`` given in YAML is used verbatim; otherwise one is generated from the fields (an
``@inproceedings`` with a venue, ``@misc`` with only an arXiv id).

Example::

    papers:
      mpd_sgr:
        title: "MPD-SGR: Robust Spiking Neural Networks with Membrane Potential ..."
        authors: [Runhao Jiang, Chengzhi Jiang, Rui Yan, Huajin Tang]
        venue: AAAI
        year: 2026
        arxiv: "2511.12199"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from snnbench.errors import BenchError, unknown
from snnbench.specs import from_mapping

_ARXIV = re.compile(r"^\d{4}\.\d{4,5}(v\d+)?$")
_DOI = re.compile(r"^10\.\d{4,9}/\S+$")


@dataclass(frozen=True)
class Paper:
    """One publication a defense or suite comes from."""

    id: str
    title: str
    venue: str = ""
    year: int = 0
    authors: tuple[str, ...] = ()
    arxiv: str = ""
    doi: str = ""
    url: str = ""
    bibtex: str = ""
    note: str = ""

    @property
    def link(self) -> str:
        """Best landing page: DOI, then arXiv, then the given URL ("" when none)."""
        if self.doi:
            return f"https://doi.org/{self.doi}"
        if self.arxiv:
            return f"https://arxiv.org/abs/{self.arxiv}"
        return self.url

    @property
    def short(self) -> str:
        """``Ding et al., NeurIPS 2022`` style label."""
        who = ""
        if self.authors:
            last = self.authors[0].split()[-1]
            who = f"{last} et al., " if len(self.authors) > 1 else f"{last}, "
        when = " ".join(x for x in (self.venue, str(self.year) if self.year else "") if x)
        return f"{who}{when}".strip(", ")

    def to_bibtex(self) -> str:
        """The YAML's ``bibtex`` verbatim, else an entry generated from the fields."""
        if self.bibtex:
            return self.bibtex.strip()
        key = re.sub(r"[^a-z0-9]", "", self.id.lower()) or "paper"
        fields = [("title", "{" + self.title + "}")]
        if self.authors:
            fields.append(("author", " and ".join(_bib_name(a) for a in self.authors)))
        kind = "misc"
        if self.venue:
            kind = "inproceedings"
            fields.append(("booktitle", self.venue))
        if self.year:
            fields.append(("year", str(self.year)))
        if self.doi:
            fields.append(("doi", self.doi))
        if self.arxiv:
            fields += [("eprint", self.arxiv), ("archivePrefix", "arXiv")]
        if self.url and not self.doi:
            fields.append(("url", self.url))
        body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields)
        return f"@{kind}{{{key},\n{body}\n}}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "venue": self.venue,
            "year": self.year,
            "authors": list(self.authors),
            "arxiv": self.arxiv,
            "doi": self.doi,
            "url": self.link,
        }


def _bib_name(name: str) -> str:
    """``Jianhao Ding`` -> ``Ding, Jianhao``; ``others`` stays (BibTeX's "et al.")."""
    parts = name.split()
    if name == "others" or len(parts) < 2:
        return name
    return f"{parts[-1]}, {' '.join(parts[:-1])}"


def load_papers(raw: Any, where: str) -> dict[str, Paper]:
    """Validate the ``papers:`` section (a mapping id -> fields)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BenchError(f"{where}: expected a mapping of paper id -> fields, got {type(raw).__name__}")
    out = {}
    for pid, body in raw.items():
        w = f"{where}.{pid}"
        if not isinstance(body, dict):
            raise BenchError(f"{w}: expected a mapping with at least 'title', got {type(body).__name__}")
        p: Paper = from_mapping(Paper, {"id": pid, **body}, w)
        if p.arxiv and not _ARXIV.match(p.arxiv):
            raise BenchError(
                f"{w}.arxiv: {p.arxiv[:40]!r} is not an arXiv id like 2511.12199 (quote it in YAML)"
            )
        if p.doi and not _DOI.match(p.doi):
            raise BenchError(f"{w}.doi: {p.doi[:60]!r} is not a DOI like 10.1609/aaai.v38i1.27804")
        if p.url and not p.url.startswith("https://"):
            raise BenchError(f"{w}.url: must start with https:// (got {p.url[:60]!r})")
        if p.year and not 1900 <= p.year <= 2100:
            raise BenchError(f"{w}.year: {p.year} is not a year")
        out[pid] = p
    return out


def check_ref(paper_id: Any, papers: dict[str, Paper], where: str) -> str:
    """A ``paper:`` reference must name an entry of ``papers:``."""
    if paper_id in (None, ""):
        return ""
    if not isinstance(paper_id, str):
        raise BenchError(f"{where}: expected a paper id (string), got {type(paper_id).__name__}")
    if paper_id not in papers:
        raise unknown("paper", paper_id, papers, where)
    return paper_id
