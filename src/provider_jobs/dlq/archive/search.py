"""Text search of the archive: the query syntax, each record's search document, and the SQL that matches it.

One syntax for every caller (``dlq list --search``, the API's ``search=``, the
console's search box): words separated by spaces, each a case-insensitive
substring that must occur, and ``"quoted words"`` as one substring with its
spaces. ``quota rg-7`` finds records mentioning both; ``"quota exceeded"`` the
phrase.

A record's search document is its error type and error, provider, operation,
job id, message id and request (its first 8,192 characters), with every secret
masked by the archive's :class:`~provider_jobs.redaction.Redactor` *before* it
is written, so that no
value ``PROVIDER_JOBS_REDACT_KEYS`` masks is ever indexed (nor found). The
document is the ``search_text`` column; SQLite indexes it with an FTS5 table
of trigrams (``dead_letters_search``, kept by triggers), PostgreSQL with a
``pg_trgm`` GIN index. Substrings shorter than a trigram match by a scan.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement

from ...redaction import Redactor

__all__ = [
    "FTS_TABLE",
    "PAGE_LOOKUP_UP_TO",
    "SEARCH_COLUMN",
    "SEARCH_FIELDS",
    "SEARCH_HELP",
    "SearchDocuments",
    "SearchMatch",
    "Searchable",
    "search_terms",
    "sqlite_page_condition",
]

#: The syntax, in a sentence, for the CLI's and the API's help.
SEARCH_HELP = (
    'Words or "quoted phrases", each a case-insensitive substring of the error, provider, '
    "operation, job id, message id or request (secrets masked); all must occur."
)
#: The column holding each record's masked search document.
SEARCH_COLUMN = "search_text"
#: Record columns a search document is made of (with the id, to write it back).
SEARCH_FIELDS = (
    "id",
    "error_type",
    "error",
    "provider_namespace",
    "resource_type",
    "operation",
    "job_id",
    "message_id",
    "request",
)
#: SQLite's FTS5 table (trigram tokenizer, external content ``dead_letters``) over that column.
FTS_TABLE = "dead_letters_search"
#: Characters in a trigram: a shorter substring cannot be looked up in either index.
_TRIGRAM = 3
#: Characters of a search document indexed, at most: every character costs an insert
#: some trigrams, and a request of megabytes must not stall the archiver.
_INDEXED_CHARS = 8_192
#: Request keys remembered as secret or not, at most.
_KEY_CACHE = 10_000
#: A request nested deeper than this is indexed down to this depth.
_MAX_DEPTH = 32
#: Folds text for that check: the separators go, and the letters that case-insensitive
#: matching takes for ASCII ones but casefold() does not fold to them (dotless i, the
#: dot that İ leaves) become what they match.
_SEPARATORS = str.maketrans({"_": None, "-": None, ".": None, " ": None, "\u0307": None, "\u0131": "i"})
_TERM = re.compile(r'"([^"]*)"?|(\S+)')


def search_terms(query: str) -> list[str]:
    """The substrings ``query`` asks for: its words, a ``"quoted phrase"`` as one; blanks dropped."""
    terms = []
    for quoted, word in _TERM.findall(query):
        term = (quoted if quoted else word).strip()
        if term and term not in terms:
            terms.append(term)
    return terms


class Searchable(Protocol):
    """What a search document is made of: a :class:`~.records.DeadLetter`, or a row of its columns."""

    @property
    def error_type(self) -> str | None: ...
    @property
    def error(self) -> str: ...
    @property
    def provider_namespace(self) -> str | None: ...
    @property
    def resource_type(self) -> str | None: ...
    @property
    def operation(self) -> str | None: ...
    @property
    def job_id(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def request(self) -> Any: ...


class SearchDocuments:
    """Makes each record's search document: what it is found by, with every secret masked.

    The request's entries under secret keys are left out, then the whole document
    passes once through :meth:`~provider_jobs.redaction.Redactor.text` (URL
    passwords, ``key=value`` pairs in errors and in the request's strings) when
    it holds a URL or a secret key's name, which is all that text can mask. NUL
    is written as ``\\x00`` (PostgreSQL's text cannot hold it), as the archive
    writes its text columns.

    Args:
        redactor: Says which keys are secret (``PROVIDER_JOBS_REDACT_KEYS``).
    """

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        # Requests repeat a few key names: whether one is secret is worked out once.
        self._secret: dict[str, bool] = {}

    def __call__(self, record: Searchable) -> str:
        provider = "/".join(p for p in (record.provider_namespace, record.resource_type) if p)
        # The short fields first: a long error or request is what the cap cuts.
        parts: list[str | None] = [
            record.error_type,
            provider,
            record.operation,
            record.job_id,
            record.message_id,
            record.error,
        ]
        if record.request is not None:
            masked = self._masked(record.request, 0)
            parts.append(_request_text(masked))
        document = "\n".join(part for part in parts if part)
        if self._may_hold_secrets(document):
            document = self.redactor.text(document)
        # Cut only once masked: a URL cut before its "@" would no longer be seen as one.
        document = document[:_INDEXED_CHARS]
        if "\x00" in document:
            document = document.replace("\x00", "\\x00")
        if not document.isascii():
            # A lone surrogate (a JSON body may carry one) is written escaped, as every text column is.
            document = document.encode("utf-8", errors="backslashreplace").decode("utf-8")
        return document

    def _may_hold_secrets(self, text: str) -> bool:
        # What Redactor.text masks is a URL's password or a pair whose key contains a secret
        # key's name, its letters perhaps separated by one of "_-. ": without either, it
        # would return the text unchanged.
        if "://" in text:
            return True
        flat = text.casefold().translate(_SEPARATORS)
        return any(key in flat for key in self.redactor.keys)

    def _is_secret(self, key: str) -> bool:
        secret = self._secret.get(key)
        if secret is None:
            secret = self.redactor.is_secret(key)
            if len(self._secret) < _KEY_CACHE:
                self._secret[key] = secret
        return secret

    def _masked(self, value: Any, depth: int) -> Any:
        if isinstance(value, dict):
            if depth >= _MAX_DEPTH:
                return None
            return {
                key: self._masked(item, depth + 1)
                for key, item in value.items()
                if item is None or not isinstance(key, str) or not self._is_secret(key)
            }
        if isinstance(value, list):
            return None if depth >= _MAX_DEPTH else [self._masked(item, depth + 1) for item in value]
        return value


def _request_text(request: Any) -> str:
    """``request`` as compact JSON text, non-ASCII as it is: orjson, four times the stdlib's speed;
    the stdlib for what orjson refuses (integers beyond 64 bits, lone surrogates)."""
    try:
        return orjson.dumps(request, default=str).decode()
    except TypeError:
        return json.dumps(request, ensure_ascii=False, separators=(",", ":"), default=str)


class SearchMatch(ColumnElement[bool]):
    """True for the rows of ``table`` (the archive's records) whose search document
    holds every one of ``terms``, each case-insensitively; compiled for each database.

    On SQLite the records are looked up by the ids the FTS5 table matches; with
    ``walk``, the query walks another index (a page's order) and checks each record's
    document instead, which is faster when the matches are many (SQLite's ``LIKE``:
    case-insensitive for ASCII letters only).
    """

    inherit_cache = False
    type = sa.Boolean()
    # A condition, not a boolean value: without this SQLite would be asked "(...) = 1",
    # which its planner cannot answer from the index.
    _is_implicitly_boolean = True

    def __init__(self, table: sa.Table, terms: Sequence[str], *, walk: bool = False) -> None:
        self.table = table
        self.terms = tuple(terms)
        self.walk = walk

    @property
    def trigram_terms(self) -> list[str]:
        """The terms an index of trigrams can look up; shorter ones are matched by a scan."""
        return [t for t in self.terms if len(t) >= _TRIGRAM]

    def fts_rowids(self) -> sa.Select[Any]:
        """SQLite: the ids of the records the FTS5 table matches for :attr:`trigram_terms`."""
        fts = sa.table(FTS_TABLE, sa.column("rowid"), sa.column(FTS_TABLE))
        expression = " AND ".join('"' + t.replace('"', '""') + '"' for t in self.trigram_terms)
        return sa.select(fts.c.rowid).where(fts.c[FTS_TABLE].op("MATCH")(expression))

    def short_terms(self) -> list[sa.ColumnElement[bool]]:
        """Conditions for the terms too short for a trigram index."""
        column = self.table.c[SEARCH_COLUMN]
        return [_like(column, t) for t in self.terms if len(t) < _TRIGRAM]


#: SQLite: a page of search results is looked up by id and sorted when the search matches
#: at most this many records; beyond, it walks the page's index and checks each record.
#: A word that common is found within a few hundred records of a page, unless a status
#: holds none of its matches: that page's walk then reads every record of the status.
PAGE_LOOKUP_UP_TO = 5_000


def sqlite_page_condition(conn: Connection, condition: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """``condition`` as a page of SQLite records is best answered: a search matching few
    records by their ids, read once here; one matching many by walking the page's index.

    SQLite's planner does not know how many records an FTS5 query matches, so it would
    look up and sort every match of a common word (a quarter of a million) for one page.
    """
    if not isinstance(condition, SearchMatch) or not condition.trigram_terms:
        return condition
    ids = conn.execute(condition.fts_rowids().limit(PAGE_LOOKUP_UP_TO + 1)).scalars().all()
    if len(ids) <= PAGE_LOOKUP_UP_TO:
        return sa.and_(condition.table.c.id.in_(ids), *condition.short_terms())
    return SearchMatch(condition.table, condition.terms, walk=True)


def _like(column: sa.ColumnElement[Any], term: str) -> sa.ColumnElement[bool]:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"%{escaped}%", escape="\\")


@compiles(SearchMatch, "sqlite")
def _sqlite_match(element: SearchMatch, compiler: SQLCompiler, **kw: Any) -> str:
    if element.walk:
        # Each record the walk reaches is read anyway; a common word is found within a few.
        column = element.table.c[SEARCH_COLUMN]
        return compiler.process(sa.and_(*(_like(column, t) for t in element.terms)), **kw)
    clauses = element.short_terms()
    if element.trigram_terms:
        clauses.insert(0, element.table.c.id.in_(element.fts_rowids()))
    return compiler.process(sa.and_(*clauses), **kw)


@compiles(SearchMatch)
def _postgresql_match(element: SearchMatch, compiler: SQLCompiler, **kw: Any) -> str:
    # The GIN index (gin_trgm_ops) serves ILIKE '%term%' for terms of 3 characters or more.
    column = element.table.c[SEARCH_COLUMN]
    return compiler.process(sa.and_(*(_like(column, t) for t in element.terms)), **kw)
