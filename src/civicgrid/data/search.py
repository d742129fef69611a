"""Unified search (统一检索): one search box over the catalogue's titles, descriptions, tags and
field names, Chinese tokenised with jieba, ranked with BM25, faceted by org, theme, class and tag.

Catalogues hold thousands of datasets, not millions, so the index lives in memory: one per
database, rebuilt when the catalogue's stamp (count, last change, metadata versions) moves.
Visibility is applied per search, so one index serves every reader.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import weakref
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jieba
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from civicgrid.core.auth import Actor
from civicgrid.data.models import Dataset, DatasetState, OpenClass

jieba.setLogLevel(logging.WARNING)

# Words of the domain jieba's general dictionary would split (so "危化品" is one token too).
DOMAIN_WORDS = [
    "危险化学品",
    "危化品",
    "网格员",
    "网格化",
    "统一社会信用代码",
    "流动人口",
    "户籍人口",
    "常住人口",
    "重点人员",
    "企业法人",
    "个体工商户",
    "矛盾纠纷",
    "行政村",
    "自然村",
    "社区矫正",
    "低保",
    "特困人员",
    "残疾人",
    "退役军人",
    "独居老人",
    "留守儿童",
    "出租房屋",
    "安全生产",
    "应急管理",
    "地名地址",
    "公共数据",
    "村居",
    "村委会",
    "居委会",
    "城市管理",
    "生态环境",
    "市场监管",
]

STOP = frozenset(
    [
        "的",
        "了",
        "和",
        "与",
        "及",
        "或",
        "等",
        "按",
        "各",
        "在",
        "是",
        "之",
        "其",
        "中",
        "为",
        "对",
        "由",
        "_",
        "-",
        "the",
        "of",
        "and",
        "by",
        "a",
        "an",
        "in",
        "for",
        "to",
    ]
)

# Field weights: a word in the title says more than the same word deep in the description.
WEIGHTS = {"title": 3.0, "name": 2.0, "tags": 2.0, "fields": 1.5, "description": 1.0}
K1 = 1.2
B = 0.75
FACETS = ("org", "theme", "share_class", "open_class", "tag")

_tokenizer_lock = threading.Lock()
_tokenizer: jieba.Tokenizer | None = None
_WORD = re.compile(r"\w", re.UNICODE)


def tokenizer() -> jieba.Tokenizer:
    """Our own jieba tokenizer, so domain words do not change other packages' tokens."""
    global _tokenizer
    with _tokenizer_lock:
        if _tokenizer is None:
            tok = jieba.Tokenizer()
            for w in DOMAIN_WORDS:
                tok.add_word(w, freq=20000)
            _tokenizer = tok
        return _tokenizer


def tokens(text: str) -> list[str]:
    """Search tokens: jieba's search mode (words and their sub-words), lower-cased, without stop
    words and punctuation; snake_case field names also give their parts."""
    out: list[str] = []
    for raw in tokenizer().cut_for_search(text or ""):
        w = raw.strip().lower()
        if not w or w in STOP or not _WORD.search(w):
            continue
        out.append(w)
    for word in re.findall(r"[a-z0-9]+(?:_[a-z0-9]+)+", (text or "").lower()):
        out.append(word)  # the whole snake_case name as well as its parts
    return out


@dataclass
class Doc:
    id: int
    name: str
    title: str
    title_en: str
    description: str
    org_id: int
    theme: str
    share_class: str
    open_class: str
    tags: list[str]
    fields: list[str]
    length: float = 0.0


@dataclass
class Index:
    stamp: tuple[Any, ...]
    docs: dict[int, Doc] = field(default_factory=dict)
    postings: dict[str, dict[int, float]] = field(default_factory=dict)
    avg_length: float = 1.0


def _stamp(session: Session) -> tuple[Any, ...]:
    row = session.execute(
        select(
            func.count(Dataset.id),
            func.max(Dataset.updated_at),
            func.coalesce(func.sum(Dataset.metadata_version), 0),
            func.max(Dataset.id),
        )
    ).one()
    return tuple(str(v) for v in row)


def _doc(ds: Dataset) -> tuple[Doc, dict[str, float]]:
    tags = [str(t) for t in json.loads(ds.tags or "[]")]
    field_words = [f"{f.name} {f.title} {f.description}" for f in ds.fields]
    doc = Doc(
        id=ds.id,
        name=ds.name,
        title=ds.title,
        title_en=ds.title_en,
        description=ds.description,
        org_id=ds.owner_org_id,
        theme=str(ds.theme),
        share_class=str(ds.share_class),
        open_class=str(ds.open_class),
        tags=tags,
        fields=[f.name for f in ds.fields],
    )
    tf: dict[str, float] = defaultdict(float)
    parts = {
        "title": f"{ds.title} {ds.title_en}",
        "name": ds.name.replace("-", "_"),
        "tags": " ".join(tags),
        "fields": " ".join(field_words),
        "description": f"{ds.description} {ds.description_en}",
    }
    for part, text in parts.items():
        for t in tokens(text):
            tf[t] += WEIGHTS[part]
    for t in tags:  # a tag is also matched whole
        tf[t.lower()] += WEIGHTS["tags"]
    doc.length = sum(tf.values())
    return doc, tf


def build(session: Session) -> Index:
    """The index of every live dataset (visibility is applied when searching)."""
    index = Index(stamp=_stamp(session))
    postings: dict[str, dict[int, float]] = defaultdict(dict)
    for ds in session.scalars(select(Dataset).where(Dataset.state == DatasetState.active)):
        doc, tf = _doc(ds)
        index.docs[doc.id] = doc
        for term, weight in tf.items():
            postings[term][doc.id] = weight
    index.postings = dict(postings)
    if index.docs:
        index.avg_length = max(1.0, sum(d.length for d in index.docs.values()) / len(index.docs))
    return index


_indexes: weakref.WeakKeyDictionary[Engine, Index] = weakref.WeakKeyDictionary()
_index_lock = threading.Lock()


def index_for(session: Session) -> Index:
    """The database's index, rebuilt first if the catalogue changed since it was built."""
    bind = session.get_bind()
    engine: Engine = bind.engine if hasattr(bind, "engine") else bind  # type: ignore[assignment]
    stamp = _stamp(session)
    current = _indexes.get(engine)
    if current is not None and current.stamp == stamp:
        return current
    with _index_lock:
        current = _indexes.get(engine)
        if current is None or current.stamp != stamp:
            current = build(session)
            _indexes[engine] = current
    return current


def invalidate(session: Session | None = None) -> None:
    """Forget the index (of one database, or all): the next search rebuilds it."""
    with _index_lock:
        if session is None:
            _indexes.clear()
            return
        bind = session.get_bind()
        _indexes.pop(bind.engine if hasattr(bind, "engine") else bind, None)  # type: ignore[arg-type]


# ---- visibility ---------------------------------------------------------------------------


def visible_ids(session: Session, actor: Actor | None, docs: Iterable[Doc]) -> set[int]:
    """The datasets the searcher may see in the catalogue: open datasets for everyone (anonymous
    readers see only these); signed-in readers also what the catalogue's rules show them."""
    from civicgrid.data import service as catalogue

    docs = list(docs)
    open_ids = {d.id for d in docs if d.open_class == OpenClass.open}
    if actor is None:
        return open_ids
    allowed = catalogue.visible_dataset_ids(session, actor)
    return {d.id for d in docs if d.id in allowed} | open_ids


# ---- searching ----------------------------------------------------------------------------


@dataclass
class Hit:
    doc: Doc
    score: float


@dataclass
class Result:
    total: int
    hits: list[Hit]
    facets: dict[str, list[dict[str, Any]]]
    terms: list[str]


def _matches(doc: Doc, filters: dict[str, str]) -> bool:
    for key, value in filters.items():
        if not value:
            continue
        if key == "org" and str(doc.org_id) != value:
            return False
        if key == "theme" and doc.theme != value:
            return False
        if key == "share_class" and doc.share_class != value:
            return False
        if key == "open_class" and doc.open_class != value:
            return False
        if key == "tag" and value not in doc.tags:
            return False
    return True


def score(index: Index, terms: list[str], candidates: set[int]) -> dict[int, float]:
    """BM25 over the weighted term frequencies; documents matching no term are left out."""
    n = max(1, len(index.docs))
    scores: dict[int, float] = defaultdict(float)
    for term in dict.fromkeys(terms):
        posting = index.postings.get(term)
        if not posting:
            continue
        idf = math.log(1 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
        for doc_id, tf in posting.items():
            if doc_id not in candidates:
                continue
            d = index.docs[doc_id]
            norm = tf * (K1 + 1) / (tf + K1 * (1 - B + B * d.length / index.avg_length))
            scores[doc_id] += idf * norm
    return scores


def search(
    session: Session,
    actor: Actor | None,
    q: str = "",
    *,
    filters: dict[str, str] | None = None,
    offset: int = 0,
    limit: int = 20,
    sort: str = "relevance",
) -> Result:
    """Datasets matching `q` that the searcher may see, best first, with facet counts over all
    matches (before the facet filters, so a reader can widen a choice again)."""
    index = index_for(session)
    filters = {k: v for k, v in (filters or {}).items() if k in FACETS and v}
    visible = visible_ids(session, actor, index.docs.values())
    terms = tokens(q)
    if q.strip() and not terms:
        terms = [q.strip().lower()]
    if terms:
        scores = score(index, terms, visible)
        matched = [Hit(index.docs[i], s) for i, s in scores.items()]
    else:
        matched = [Hit(index.docs[i], 0.0) for i in visible]
    facets = _facets(session, matched, filters)
    hits = [h for h in matched if _matches(h.doc, filters)]
    if sort == "name":
        hits.sort(key=lambda h: h.doc.name)
    elif sort == "title":
        hits.sort(key=lambda h: (h.doc.title, h.doc.name))
    elif sort == "newest":
        hits.sort(key=lambda h: -h.doc.id)
    else:
        hits.sort(key=lambda h: (-round(h.score, 9), h.doc.name))
    return Result(total=len(hits), hits=hits[offset : offset + limit], facets=facets, terms=terms)


def _facets(session: Session, matched: list[Hit], filters: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Counts per facet value: each facet counted over the matches with the *other* facets'
    filters applied (the usual drill-down behaviour)."""
    from civicgrid.accounts.models import Org

    out: dict[str, list[dict[str, Any]]] = {}
    for facet in FACETS:
        others = {k: v for k, v in filters.items() if k != facet}
        counts: Counter[str] = Counter()
        for h in matched:
            if not _matches(h.doc, others):
                continue
            if facet == "org":
                counts[str(h.doc.org_id)] += 1
            elif facet == "tag":
                counts.update(dict.fromkeys(h.doc.tags, 1))
            else:
                counts[str(getattr(h.doc, facet))] += 1
        items = [{"value": v, "count": c} for v, c in counts.most_common()]
        if facet == "org" and items:
            ids = [int(str(i["value"])) for i in items]
            names = {
                oid: name for oid, name in session.execute(select(Org.id, Org.name).where(Org.id.in_(ids)))
            }
            for i in items:
                i["label"] = names.get(int(str(i["value"])), i["value"])
        out[facet] = items
    return out
