"""The data sandbox (数据沙箱): consumers run aggregate SQL over granted data; raw rows never leave.

A query is parsed with sqlglot (DuckDB dialect) and refused, with a reason in the user's
language, unless it is one read-only SELECT over granted datasets, built only from allowed
node types and functions, whose every output is an aggregate or a GROUP BY key. Accepted
queries are rewritten onto the engine's views with a hidden group size per dataset, run
through the engine with a time and memory limit, and groups smaller than the dataset's k
are dropped. Every query and its outcome is logged (SandboxQuery) and audited.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlalchemy import Select, select
from sqlalchemy.orm import Session
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from civicgrid.core import audit
from civicgrid.core.auth import Actor
from civicgrid.core.errors import AppError, Invalid, NotFound
from civicgrid.core.i18n import gettext
from civicgrid.core.masking import mask_value
from civicgrid.data.models import SandboxQuery

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # it warns on every fallback to Command

DIALECT = "duckdb"
MAX_SQL_CHARS = 20_000
MAX_GROUPS = 10_000  # output rows returned; more than this is cut (and said so)
HIDDEN = "__cg_k"  # prefix of the hidden group-size columns (and refused in user identifiers)

# Aggregates whose result is a statistic of the group. Aggregates that hand back one row's
# value or the whole list (list, string_agg, any_value, first, arg_max, histogram…) are not here.
AGGREGATES: dict[str, str] = {
    "count": "count(x)",
    "count_if": "count_if(x > 1)",
    "sum": "sum(x)",
    "avg": "avg(x)",
    "min": "min(x)",
    "max": "max(x)",
    "median": "median(x)",
    "quantile_cont": "quantile_cont(x, 0.5)",
    "stddev": "stddev(x)",
    "stddev_pop": "stddev_pop(x)",
    "stddev_samp": "stddev_samp(x)",
    "variance": "variance(x)",
    "var_pop": "var_pop(x)",
    "var_samp": "var_samp(x)",
    "approx_count_distinct": "approx_count_distinct(x)",
    "bool_and": "bool_and(x)",
    "bool_or": "bool_or(x)",
}

# Scalar functions: arithmetic, text and dates. Nothing that reads files, settings, the
# environment, variables or the clock beyond today's date.
SCALARS: dict[str, str] = {
    "abs": "abs(x)",
    "round": "round(x, 1)",
    "floor": "floor(x)",
    "ceil": "ceil(x)",
    "sqrt": "sqrt(x)",
    "ln": "ln(x)",
    "log": "log(x)",
    "exp": "exp(x)",
    "power": "power(x, 2)",
    "sign": "sign(x)",
    "greatest": "greatest(x, 1)",
    "least": "least(x, 1)",
    "coalesce": "coalesce(x, 1)",
    "nullif": "nullif(x, 1)",
    "if": "if(x, 1, 2)",
    "lower": "lower(x)",
    "upper": "upper(x)",
    "length": "length(x)",
    "substr": "substr(x, 1, 2)",
    "trim": "trim(x)",
    "left": "left(x, 2)",
    "right": "right(x, 2)",
    "concat": "concat(x, 'a')",
    "replace": "replace(x, 'a', 'b')",
    "starts_with": "starts_with(x, 'a')",
    "ends_with": "ends_with(x, 'a')",
    "contains": "contains(x, 'a')",
    "regexp_matches": "regexp_matches(x, 'a')",
    "strftime": "strftime(x, '%Y')",
    "date_trunc": "date_trunc('month', x)",
    "date_part": "date_part('year', x)",
    "date_diff": "date_diff('day', x, x)",
    "make_date": "make_date(2020, 1, 1)",
    "extract": "extract(year FROM x)",
    "year": "year(x)",
    "month": "month(x)",
    "day": "day(x)",
    "quarter": "quarter(x)",
    "dayofweek": "dayofweek(x)",
    "hour": "hour(x)",
    "current_date": "current_date",
    "cast": "CAST(x AS VARCHAR)",
    "try_cast": "try_cast(x AS INTEGER)",
    "case": "CASE WHEN x THEN 1 ELSE 0 END",
}

# The grammar a query may use besides functions: structure, literals and operators.
_STRUCTURE: tuple[type[exp.Expr], ...] = (
    exp.Select,
    exp.From,
    exp.Join,
    exp.Table,
    exp.TableAlias,
    exp.Identifier,
    exp.Column,
    exp.Alias,
    exp.Where,
    exp.Group,
    exp.Having,
    exp.Order,
    exp.Ordered,
    exp.Limit,
    exp.Offset,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Paren,
    exp.Tuple,
    exp.DataType,
    exp.DataTypeParam,
    exp.Interval,
    exp.Distinct,
    exp.Filter,
    exp.Star,
    exp.Var,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.NullSafeEQ,
    exp.NullSafeNEQ,
    exp.And,
    exp.Or,
    exp.Not,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.IntDiv,
    exp.Mod,
    exp.Neg,
    exp.Like,
    exp.ILike,
    exp.In,
    exp.Between,
    exp.Is,
    exp.DPipe,
)

# Constructs refused with a name the analyst recognises (others are named by their SQL keyword).
_CONSTRUCTS: dict[type[exp.Expr], str] = {
    exp.Subquery: "subqueries",
    exp.With: "WITH (common table expressions)",
    exp.CTE: "WITH (common table expressions)",
    exp.Window: "window functions (OVER)",
    exp.Union: "UNION",
    exp.Intersect: "INTERSECT",
    exp.Except: "EXCEPT",
    exp.Placeholder: "parameters",
    exp.Parameter: "parameters",
    exp.TableSample: "TABLESAMPLE",
    exp.Lateral: "LATERAL",
    exp.Unnest: "UNNEST",
    exp.Pivot: "PIVOT",
    exp.Into: "SELECT INTO",
    exp.Qualify: "QUALIFY",
    exp.Values: "VALUES",
    exp.Lambda: "lambda functions",
    exp.Cube: "CUBE",
    exp.Rollup: "ROLLUP",
    exp.GroupingSets: "GROUPING SETS",
    exp.Dot: "nested field access",
    exp.Bracket: "subscripts",
}

_STATEMENT_WORDS = frozenset(
    {
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "CREATE",
        "DROP",
        "ALTER",
        "COPY",
        "ATTACH",
        "DETACH",
        "PRAGMA",
        "INSTALL",
        "LOAD",
        "SET",
        "RESET",
        "EXPORT",
        "IMPORT",
        "CALL",
        "USE",
        "VACUUM",
        "CHECKPOINT",
        "TRUNCATE",
        "GRANT",
        "REVOKE",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "EXPLAIN",
        "DESCRIBE",
        "SHOW",
        "SUMMARIZE",
        "PREPARE",
        "EXECUTE",
        "DEALLOCATE",
    }
)


def _classes(samples: Mapping[str, str]) -> tuple[set[type[exp.Expr]], set[str]]:
    """The sqlglot node classes (and names of functions sqlglot does not know) the samples make,
    so the allow-list follows the parser's version instead of naming its classes by hand."""
    classes: set[type[exp.Expr]] = set()
    anonymous: set[str] = set()
    for sample in samples.values():
        node = sqlglot.parse_one(f"SELECT {sample} FROM t", read=DIALECT).expressions[0]
        if isinstance(node, exp.Anonymous):
            anonymous.add(node.name.lower())
        elif isinstance(node, exp.Func):
            classes.add(type(node))
        for inner in node.walk():
            if isinstance(inner, exp.If | exp.Var | exp.Literal | exp.DataType | exp.Interval):
                classes.add(type(inner))
    return classes, anonymous


_AGG_CLASSES, _AGG_NAMES = _classes(AGGREGATES)
_SCALAR_CLASSES, _SCALAR_NAMES = _classes(SCALARS)
_AGG_CLASSES -= {exp.Var, exp.Literal, exp.DataType, exp.Interval, exp.If}
_ALLOWED: set[type[exp.Expr]] = set(_STRUCTURE) | _AGG_CLASSES | _SCALAR_CLASSES


class SandboxRefused(Invalid):
    """A query the sandbox will not run; the message says why."""

    def __init__(self, message: str, **params: Any) -> None:
        super().__init__(message, error_code="sandbox_refused", **params)

    def translated(self) -> str:
        params = dict(self.params)
        if "construct" in params:  # "subqueries", "window functions (OVER)"…: words, not SQL
            params["construct"] = gettext(str(params["construct"]))
        return gettext(self.message, **params)


@dataclass(frozen=True)
class SandboxTable:
    """What the sandbox may know of one granted dataset: its readable fields and their
    sensitivity, the personal fields granted in clear, its primary key and its k."""

    name: str  # the catalogue name the analyst writes
    view: str  # the engine's view of the granted rows
    fields: Mapping[str, str]  # readable field → sensitivity ("none" | "personal" | "sensitive")
    all_fields: frozenset[str] = frozenset()  # every field of the dataset (to tell "not granted")
    clear: frozenset[str] = frozenset()
    primary_key: tuple[str, ...] = ()
    k: int = 10
    dataset_id: int = 0
    row_filter: tuple[tuple[str, str, Any], ...] = ()  # the grant's (field, op, value), AND-ed

    def is_protected(self, field_name: str) -> bool:
        return self.fields.get(field_name, "none") != "none" and field_name not in self.clear


@dataclass
class Plan:
    """A validated query: the SQL to run on the engine's views and how to read its answer."""

    sql: str
    tables: list[SandboxTable]
    columns: list[str]  # the analyst's output columns, in order
    hidden: list[tuple[str, int]] = field(default_factory=list)  # (hidden column, k)


def _is_aggregate(node: exp.Expr) -> bool:
    if isinstance(node, exp.Filter):  # COUNT(*) FILTER (WHERE …): the filter belongs to the aggregate
        return _is_aggregate(node.this)
    if isinstance(node, exp.Anonymous):
        return node.name.lower() in _AGG_NAMES
    return type(node) in _AGG_CLASSES


def _function_name(node: exp.Expr) -> str:
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return node.key


def _construct_name(node: exp.Expr) -> str:
    for cls, name in _CONSTRUCTS.items():
        if isinstance(node, cls):
            return name
    return node.key.upper()


def _first_word(sql: str) -> str:
    words = sql.strip().lstrip("(").split(None, 1)
    return words[0].upper().rstrip(";") if words else ""


def parse(sql: str) -> exp.Select:
    """The one SELECT statement of `sql`, or a refusal saying what else it is."""
    if not sql or not sql.strip():
        raise SandboxRefused("Write a SELECT query.")
    if len(sql) > MAX_SQL_CHARS:
        raise SandboxRefused("The query is longer than {max} characters.", max=MAX_SQL_CHARS)
    word = _first_word(sql)
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except (ParseError, TokenError) as e:
        if word in _STATEMENT_WORDS:
            raise SandboxRefused(
                "Only a read-only SELECT may run in the sandbox, not {kind}.", kind=word
            ) from e
        first = str(e).splitlines()[0] if str(e) else ""
        raise SandboxRefused("The query could not be read: {problem}", problem=first[:200]) from e
    if not statements:
        raise SandboxRefused("Write a SELECT query.")
    if len(statements) > 1:
        raise SandboxRefused(
            "Send one statement at a time; this text holds {count} statements.", count=len(statements)
        )
    root = statements[0]
    if isinstance(root, exp.Union | exp.Intersect | exp.Except):
        raise SandboxRefused("The sandbox does not allow {construct}.", construct=_construct_name(root))
    if not isinstance(root, exp.Select):
        kind = word if word and word != "WITH" else root.key.upper()
        if isinstance(root, exp.Command):
            kind = str(root.this).upper()
        raise SandboxRefused("Only a read-only SELECT may run in the sandbox, not {kind}.", kind=kind)
    return root


def _sources(query: exp.Select) -> list[exp.Expr]:
    src: list[exp.Expr] = []
    frm = query.args.get("from_") or query.args.get("from")
    if frm is not None:
        src.append(frm.this)
    for join in query.args.get("joins") or []:
        src.append(join.this)
    return src


def validate(sql: str, granted: Mapping[str, SandboxTable]) -> Plan:
    """Check `sql` against the rules and the grants (by catalogue name); return the plan to run."""
    query = parse(sql)
    if query.args.get("with_") is not None or query.args.get("with") is not None:
        raise SandboxRefused("The sandbox does not allow {construct}.", construct=_CONSTRUCTS[exp.With])
    if query.args.get("into") is not None:
        raise SandboxRefused("The sandbox does not allow {construct}.", construct="SELECT INTO")

    # 1. FROM and JOIN name granted datasets only: no files, table functions or subqueries.
    sources = _sources(query)
    if not sources:
        raise SandboxRefused("The query must read FROM a dataset granted to you.")
    aliases: dict[str, SandboxTable] = {}
    tables: list[tuple[exp.Table, SandboxTable]] = []
    for src in sources:
        if not isinstance(src, exp.Table) or not isinstance(src.this, exp.Identifier):
            shown = src.sql(dialect=DIALECT)[:80]
            raise SandboxRefused(
                "FROM may name only datasets granted to you, not {source}: files, table functions "
                "and subqueries cannot be read in the sandbox.",
                source=shown,
            )
        if src.args.get("db") is not None or src.args.get("catalog") is not None:
            raise SandboxRefused("Name a dataset without a schema or database: {name}.", name=src.sql())
        name = src.name
        if src.this.quoted and any(ch in name for ch in "./\\*:"):
            raise SandboxRefused(
                "Files cannot be read in the sandbox ({name}); name a dataset granted to you.", name=name
            )
        table = granted.get(name)
        if table is None:
            raise SandboxRefused("You have no sandbox grant for a dataset named {name}.", name=name)
        alias = src.alias or name
        if alias in aliases:
            raise SandboxRefused("Give each dataset in the query its own alias ({name}).", name=alias)
        aliases[alias] = table
        tables.append((src, table))
    joins = query.args.get("joins") or []
    for join in joins:
        if not join.args.get("on") and not join.args.get("using"):
            raise SandboxRefused("Every JOIN needs an ON or USING condition (no cross joins).")
        method = str(join.args.get("method") or "").upper()
        if method in ("ASOF", "POSITIONAL"):
            raise SandboxRefused("The sandbox does not allow {construct}.", construct=f"{method} JOIN")
    if joins:
        for _src, t in tables:
            if not t.primary_key:
                raise SandboxRefused(
                    "Dataset {name} has no primary key, so it cannot be joined in the sandbox "
                    "(group sizes could not be counted).",
                    name=t.name,
                )

    # 2. Only allowed grammar and functions, anywhere in the query. A refused function is named
    # before a refused construct around it (any_value(x) is wrapped in IGNORE NULLS, say).
    bad_functions: list[str] = []
    bad_constructs: list[str] = []
    for node in query.walk():
        if isinstance(node, exp.Identifier) and node.name.lower().startswith(HIDDEN):
            raise SandboxRefused("Names beginning with {prefix} are reserved.", prefix=HIDDEN)
        if isinstance(node, exp.Anonymous):
            if node.name.lower() not in _AGG_NAMES | _SCALAR_NAMES:
                bad_functions.append(node.name.lower())
            continue
        if type(node) in _ALLOWED:
            if isinstance(node, exp.Star) and not isinstance(node.parent, exp.Count):
                raise SandboxRefused("SELECT * would show raw rows; only COUNT(*) may use *.")
            if isinstance(node, exp.Group) and node.args.get("all"):
                raise SandboxRefused("Name the GROUP BY columns instead of GROUP BY ALL.")
            if isinstance(node, exp.Select) and node is not query:
                bad_constructs.append(_CONSTRUCTS[exp.Subquery])
            continue
        if isinstance(node, exp.Func) and type(node) not in _CONSTRUCTS:
            bad_functions.append(_function_name(node))
        else:
            bad_constructs.append(_construct_name(node))
    if bad_functions:
        raise SandboxRefused("The function {name}() is not allowed in the sandbox.", name=bad_functions[0])
    if bad_constructs:
        raise SandboxRefused("The sandbox does not allow {construct}.", construct=bad_constructs[0])

    # 3. Columns: known, granted, and personal fields only counted.
    projections = list(query.expressions)
    out_aliases = {p.alias: p.this for p in projections if isinstance(p, exp.Alias)}
    resolved: dict[int, tuple[str, str]] = {}  # id(Column) → (alias, field)

    def resolve(col: exp.Column) -> tuple[str, str] | None:
        qualifier = col.table
        name = col.name
        if col.args.get("db") is not None:
            raise SandboxRefused("Name a field as dataset.field at most: {name}.", name=col.sql())
        if qualifier:
            t = aliases.get(qualifier)
            if t is None:
                raise SandboxRefused("{name} is not a dataset or alias in this query.", name=qualifier)
            candidates = [(qualifier, t)]
        else:
            candidates = [(a, t) for a, t in aliases.items() if name in t.all_fields or name in t.fields]
            if not candidates:
                if name in out_aliases:
                    return None  # an output alias, checked through its expression
                raise SandboxRefused("There is no field {name} in the datasets of this query.", name=name)
            if len(candidates) > 1:
                raise SandboxRefused(
                    "Field {name} is in more than one dataset: write alias.{name}.", name=name
                )
        alias, t = candidates[0]
        if name not in t.fields:
            if name in t.all_fields:
                raise SandboxRefused(
                    "Field {field} of dataset {dataset} is not in your grant.", field=name, dataset=t.name
                )
            raise SandboxRefused("Dataset {dataset} has no field {field}.", dataset=t.name, field=name)
        return alias, name

    join_conditions: set[int] = set()
    for join in joins:
        for part in (join.args.get("on"), *(join.args.get("using") or [])):
            if part is not None:
                join_conditions |= {id(n) for n in part.walk()}

    for col in query.find_all(exp.Column):
        r = resolve(col)
        if r is None:
            continue
        resolved[id(col)] = r
        alias, name = r
        t = aliases[alias]
        if not t.is_protected(name):
            continue
        counted = isinstance(col.parent, exp.Count) or (
            isinstance(col.parent, exp.Distinct) and isinstance(col.parent.parent, exp.Count)
        )
        joined_on = id(col) in join_conditions and isinstance(col.parent, exp.EQ)
        if not (counted or joined_on):
            raise SandboxRefused(
                "Field {field} is personal data: in the sandbox it may only be counted, as COUNT({field}) "
                "or COUNT(DISTINCT {field}).",
                field=name,
            )
    for join in joins:
        for ident in join.args.get("using") or []:
            for _a, t in aliases.items():
                if ident.name in t.all_fields and ident.name not in t.fields:
                    raise SandboxRefused(
                        "Field {field} of dataset {dataset} is not in your grant.",
                        field=ident.name,
                        dataset=t.name,
                    )

    # 4. Aggregate outputs only: each output is a GROUP BY key or built from aggregates.
    def canonical(node: exp.Expr) -> str:
        """The expression with every field written as alias.field, to compare keys and outputs."""

        def norm(col: exp.Column) -> exp.Expr:
            if id(col) in resolved:
                a, f = resolved[id(col)]
                return exp.column(f, table=a)
            return col.copy()

        if isinstance(node, exp.Column):
            return norm(node).sql(dialect=DIALECT)
        copy = node.copy()
        pairs = zip(list(node.find_all(exp.Column)), list(copy.find_all(exp.Column)), strict=True)
        for orig, dup in pairs:
            dup.replace(norm(orig))
        return copy.sql(dialect=DIALECT)

    for p in projections:
        if isinstance(p, exp.Alias) and p.alias:
            for _a, t in aliases.items():
                if p.alias in t.all_fields and not (
                    isinstance(p.this, exp.Column) and p.this.name == p.alias
                ):
                    raise SandboxRefused(
                        "The output name {name} is also a field; choose another name.", name=p.alias
                    )

    group = query.args.get("group")
    keys: set[str] = set()
    for g in group.expressions if group else []:
        if isinstance(g, exp.Literal) and not g.is_string:
            pos = int(g.name)
            if not 1 <= pos <= len(projections):
                raise SandboxRefused("GROUP BY {position} does not name an output column.", position=pos)
            target = projections[pos - 1]
            keys.add(canonical(target.this if isinstance(target, exp.Alias) else target))
        elif isinstance(g, exp.Column) and id(g) not in resolved and g.name in out_aliases:
            keys.add(canonical(out_aliases[g.name]))
        else:
            if any(_is_aggregate(n) for n in g.walk()):
                raise SandboxRefused("GROUP BY cannot hold an aggregate.")
            keys.add(canonical(g))

    aggregating = bool(group) or any(_is_aggregate(n) for p in projections for n in p.walk())
    if not aggregating:
        raise SandboxRefused(
            "The sandbox returns only aggregates: use COUNT, SUM, AVG and the like, with GROUP BY "
            "for per-group figures."
        )
    columns: list[str] = []
    for i, p in enumerate(projections, start=1):
        inner = p.this if isinstance(p, exp.Alias) else p
        columns.append(p.alias_or_name or f"col{i}")
        if canonical(inner) in keys:
            continue
        for col in inner.find_all(exp.Column):
            if not _inside_aggregate(col, inner):
                raise SandboxRefused(
                    "Output {column} shows values row by row: every output must be an aggregate "
                    "(COUNT, SUM, AVG…) or a GROUP BY column.",
                    column=p.sql(dialect=DIALECT)[:80],
                )

    # 5. Rewrite onto the engine's views, with the hidden group sizes.
    run = query.copy()
    hidden: list[tuple[str, int]] = []
    run_tables = [src for src in run.find_all(exp.Table)]
    for src in run_tables:
        t = granted[src.name]
        alias = src.alias or src.name
        if t.row_filter:
            # The grant's row filter, applied under the analyst's query (it cannot be undone there).
            inner = exp.select("*").from_(exp.to_identifier(t.view, quoted=True))
            inner = inner.where(exp.and_(*(_condition(*c) for c in t.row_filter)))
            src.replace(inner.subquery(exp.to_identifier(alias, quoted=True)))
        else:
            src.set("this", exp.to_identifier(t.view, quoted=True))
            src.set("alias", exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
    if joins:
        for n, (src, t) in enumerate(tables):
            alias = src.alias or src.name
            cols = [
                exp.column(k, table=exp.to_identifier(alias, quoted=True), quoted=True) for k in t.primary_key
            ]
            arg: exp.Expr = cols[0] if len(cols) == 1 else exp.Tuple(expressions=cols)
            run.select(
                exp.alias_(exp.Count(this=exp.Distinct(expressions=[arg])), f"{HIDDEN}{n}"), copy=False
            )
            hidden.append((f"{HIDDEN}{n}", t.k))
    else:
        t = tables[0][1]
        run.select(exp.alias_(exp.Count(this=exp.Star()), f"{HIDDEN}0"), copy=False)
        hidden.append((f"{HIDDEN}0", t.k))
    limit = query.args.get("limit")
    user_limit = None
    if limit is not None:
        value = limit.expression
        if not (isinstance(value, exp.Literal) and not value.is_string and value.name.isdigit()):
            raise SandboxRefused("LIMIT takes a whole number.")
        user_limit = int(value.name)
    if query.args.get("offset") is not None:
        off = query.args["offset"].expression
        if not (isinstance(off, exp.Literal) and not off.is_string and off.name.isdigit()):
            raise SandboxRefused("OFFSET takes a whole number.")
    if user_limit is None or user_limit > MAX_GROUPS + 1:
        run.limit(MAX_GROUPS + 1, copy=False)
    return Plan(
        sql=run.sql(dialect=DIALECT),
        tables=[t for _s, t in tables],
        columns=_unique(columns),
        hidden=hidden,
    )


def _value(value: Any) -> exp.Expr:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float):
        return exp.Literal.number(value)
    return exp.Literal.string(str(value))


def _condition(field_name: str, op: str, value: Any) -> exp.Expr:
    """One grant condition (access.OPS) as SQL over the raw column."""
    col = exp.column(field_name, quoted=True)
    if op == "is_null":
        return exp.Is(this=col, expression=exp.Null())
    if op == "not_null":
        return exp.Not(this=exp.Is(this=col, expression=exp.Null()))
    if op == "in":
        values = value if isinstance(value, list | tuple) else [value]
        return exp.In(this=col, expressions=[_value(v) for v in values])
    ops: dict[str, type[exp.Expr]] = {
        "eq": exp.EQ,
        "ne": exp.NEQ,
        "lt": exp.LT,
        "lte": exp.LTE,
        "gt": exp.GT,
        "gte": exp.GTE,
    }
    if op not in ops:
        raise ValueError(f"unknown row filter operator {op}")
    return ops[op](this=col, expression=_value(value))


def _inside_aggregate(node: exp.Expr, top: exp.Expr) -> bool:
    cur = node.parent
    while cur is not None:
        if _is_aggregate(cur):
            return True
        if cur is top:
            return False
        cur = cur.parent
    return False


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}_{seen[n]}")
        else:
            seen[n] = 0
            out.append(n)
    return out


@dataclass
class SandboxResult:
    columns: list[str]
    rows: list[list[Any]]
    suppressed: int  # groups dropped for having fewer than k rows
    truncated: bool
    millis: int
    query_id: int = 0


def suppress(
    plan: Plan, columns: list[str], rows: Iterable[Iterable[Any]]
) -> tuple[list[list[Any]], int, bool]:
    """Drop groups smaller than k (by the hidden sizes) and the hidden columns themselves."""
    index = {c: i for i, c in enumerate(columns)}
    checks = [(index[h], k) for h, k in plan.hidden]
    keep = [i for i, c in enumerate(columns) if not c.startswith(HIDDEN)]
    out: list[list[Any]] = []
    dropped = 0
    truncated = False
    for row in rows:
        values = list(row)
        if any((values[i] or 0) < k for i, k in checks):
            dropped += 1
            continue
        if len(out) >= MAX_GROUPS:
            truncated = True
            break
        out.append([values[i] for i in keep])
    return out, dropped, truncated


def allowed_functions() -> dict[str, list[str]]:
    """The allow-list, for the analysts' guide and the sandbox page."""
    return {"aggregates": sorted(AGGREGATES), "scalars": sorted(SCALARS)}


def _now_ms() -> float:
    return time.perf_counter() * 1000


# ---- running ------------------------------------------------------------------------------

TIMEOUT_SECONDS = 10.0
MEMORY_LIMIT = "1GB"
_DIGITS = re.compile(r"\d{6,}")


def _logged_sql(sql: str) -> str:
    """The query as logged: long digit runs (ID and phone numbers) masked, never kept in clear."""
    return _DIGITS.sub(lambda m: mask_value("id_number", m.group(0)), sql)[:MAX_SQL_CHARS]


def _english(exc: AppError) -> str:
    return exc.message.format(**exc.params) if exc.params else exc.message


@dataclass(frozen=True)
class ViewSpec:
    """What the engine's sandbox view of one dataset shows: the readable fields plus the
    primary key and row-filter fields the rewrite needs, protected ones as salted hashes (a
    stable pseudonym: COUNT(DISTINCT …) and join equality still work, values never show)."""

    fields: tuple[str, ...]
    masks: dict[str, str]


def _view_spec(table: SandboxTable, policy: Any, protected: set[str]) -> ViewSpec:
    filtered = {f for f, _op, _v in table.row_filter}
    names = list(dict.fromkeys([*policy.fields, *table.primary_key, *filtered]))
    masks = {
        n: "hash"
        for n in names
        if n not in filtered and (n in protected or n not in policy.fields) and n not in table.clear
    }
    return ViewSpec(fields=tuple(names), masks=masks)


def _granted_tables(
    session: Session, actor: Actor, query: exp.Select
) -> dict[str, tuple[SandboxTable, ViewSpec, Any]]:
    """The sandbox view of each dataset the query names, from the org's policy for it."""
    from civicgrid.data import access

    out: dict[str, tuple[SandboxTable, ViewSpec, Any]] = {}
    for n, src in enumerate(_sources(query)):
        if not isinstance(src, exp.Table) or not isinstance(src.this, exp.Identifier) or src.name in out:
            continue
        if src.args.get("db") is not None or (src.this.quoted and any(ch in src.name for ch in "./\\*:")):
            continue  # refused by validate() with its own reason
        # Catalogue names use hyphens; village_population may stand for "village-population".
        candidates = list(dict.fromkeys([src.name, src.name.replace("_", "-")]))
        policy = None
        for i, name in enumerate(candidates):
            try:
                policy = access.policy_for(session, actor.org_id, name)
                break
            except NotFound:
                if i == len(candidates) - 1:
                    raise SandboxRefused(
                        "You have no sandbox grant for a dataset named {name}.", name=src.name
                    ) from None
        assert policy is not None  # the loop either found one or raised
        ds = access.get_dataset(session, policy.dataset_id)
        if ds.current_version_id is None:
            raise SandboxRefused("Dataset {name} holds no data yet.", name=ds.name)
        protected = {f.name for f in ds.fields if access.is_protected(f)}
        table = SandboxTable(
            name=ds.name,
            view=f"sandbox_view_{n}",
            fields={f: ("personal" if f in policy.masks else "none") for f in policy.fields},
            all_fields=frozenset(f.name for f in ds.fields),
            clear=frozenset(policy.clear_fields),
            primary_key=tuple(f.name for f in ds.fields if f.primary_key),
            k=ds.k_threshold or 10,
            dataset_id=ds.id,
            row_filter=tuple((c.field, c.op, c.value) for c in policy.row_filter),
        )
        out[src.name] = (table, _view_spec(table, policy, protected), policy)
    return out


def run_query(
    session: Session,
    actor: Actor,
    sql: str,
    *,
    timeout_s: float | None = None,
    memory_limit: str | None = None,
) -> SandboxResult:
    """Validate and run one sandbox query for the actor's org. Refusals, timeouts and failures
    raise (after being logged in SandboxQuery and the audit, in the caller's transaction: the
    caller commits before passing the error on); results hold only groups of at least k rows."""
    from civicgrid.data import access, service

    started = _now_ms()
    tables: dict[str, tuple[SandboxTable, ViewSpec, Any]] = {}
    log = SandboxQuery(user_id=actor.user_id, org_id=actor.org_id, sql=_logged_sql(sql or ""))
    try:
        tables = _granted_tables(session, actor, parse(sql))
        plan = validate(sql, {name: t for name, (t, _v, _p) in tables.items()})
        answer = service.run_sql(
            session,
            plan.sql,
            {t.view: (t.dataset_id, spec) for t, spec, _p in tables.values()},
            timeout_s=timeout_s or TIMEOUT_SECONDS,
            memory_limit=memory_limit or MEMORY_LIMIT,
            max_rows=MAX_GROUPS + 1,
        )
        rows, dropped, truncated = suppress(plan, answer.columns, answer.rows)
    except AppError as exc:
        timed_out = exc.code in ("timeout", "query_timeout")
        log.outcome = "timeout" if timed_out else ("refused" if exc.status < 500 else "failed")
        log.reason = _english(exc)
        _close(session, actor, log, tables, started)
        raise
    except Exception:
        log.outcome = "failed"
        log.reason = "internal error"
        _close(session, actor, log, tables, started)
        raise
    columns = [c for c in answer.columns if not c.startswith(HIDDEN)]
    log.outcome = "ok"
    log.rows_out = len(rows)
    log.suppressed_groups = dropped
    _close(session, actor, log, tables, started)
    for t, _spec, policy in tables.values():
        ds = access.get_dataset(session, t.dataset_id)
        access.record_read(
            session,
            actor,
            dataset=ds,
            channel="sandbox",
            rows=len(rows),
            query={"sql": log.sql, "sandbox_query": log.id, "suppressed_groups": dropped},
            policy=policy,
        )
    return SandboxResult(
        columns=columns,
        rows=rows,
        suppressed=dropped,
        truncated=truncated,
        millis=log.millis,
        query_id=log.id,
    )


def _close(
    session: Session,
    actor: Actor,
    log: SandboxQuery,
    tables: dict[str, Any],
    started: float,
) -> None:
    log.datasets = json.dumps(sorted(tables), ensure_ascii=False)
    log.millis = int(_now_ms() - started)
    session.add(log)
    session.flush()
    if log.outcome != "ok":
        # Successful reads are audited per dataset by record_read; the rest here, once.
        audit.record(
            session,
            actor,
            f"data.sandbox.{log.outcome}",
            "sandbox_query",
            log.id,
            extra={"sql": log.sql, "datasets": sorted(tables), "reason": log.reason},
        )


def history_stmt(actor: Actor) -> Select[Any]:
    """The actor's own sandbox queries, newest first."""
    return select(SandboxQuery).where(SandboxQuery.user_id == actor.user_id).order_by(SandboxQuery.id.desc())
