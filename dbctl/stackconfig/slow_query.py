"""The slow-query log filter, pure: what counts as a slow statement in RDS's exported PostgreSQL log.

The threshold is shared by the alarm (components/alarm_rules.py), RDS's log_min_duration_statement and
auto_explain (dbctl/stackconfig/parameters.py, the local stack) and `dbctl preflight`.

The slow-query filter: RDS writes `log_line_prefix = %t:%r:%u@%d:[%p]:`, so a slow statement is logged as
`2026-11-25 05:52:44 UTC:10.0.1.5(58704):spike_app@spike_land:[11494]:LOG:  duration: 1202.851 ms  ...`.
CloudWatch filter patterns cannot compare a number inside free text, but a space-delimited pattern names
fields and compares one numerically: `[..., label="duration:", ms>1000, unit="ms", ...]` matches when
some field is exactly `duration:`, the next is a number above 1000 and the one after is `ms`. The ellipses
make it independent of how many fields the prefix splits into (and of the two spaces PostgreSQL writes
after `LOG:`). `filter_pattern_matches` evaluates that subset of the syntax in Python, so tests can run the
pattern over real PostgreSQL log lines; `aws logs test-metric-filter` checks it against CloudWatch itself
(docs/operations.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

SLOW_QUERY_THRESHOLD_MS: Final = 1000


def slow_query_filter_pattern(threshold_ms: int = SLOW_QUERY_THRESHOLD_MS) -> str:
    """The space-delimited filter pattern counting PostgreSQL statements slower than `threshold_ms`.

    `kind!="plan:"` skips auto_explain's line for the same statement (`duration: … ms  plan:`), which would
    otherwise count every slow statement twice; the cost: a statement already logged by log_statement (DDL)
    gets a bare `duration: … ms` line, which is not counted."""
    return f'[..., label="duration:", ms>{threshold_ms}, unit="ms", kind!="plan:", ...]'


SLOW_QUERY_FILTER_PATTERN: Final = slow_query_filter_pattern()


# --- a Python evaluator for the space-delimited filter patterns used here ---------------------------------

_FIELD = re.compile(
    r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?:(?P<op>!=|>=|<=|=|>|<)\s*(?P<value>.+?))?\s*$"
)


@dataclass(frozen=True)
class _Field:
    ellipsis: bool = False
    op: str | None = None
    value: str | None = None
    quoted: bool = False


def _parse_pattern(pattern: str) -> list[_Field]:
    body = pattern.strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise ValueError(f"not a space-delimited filter pattern (expected [...]): {pattern!r}")
    fields: list[_Field] = []
    for part in body[1:-1].split(","):
        if part.strip() == "...":
            fields.append(_Field(ellipsis=True))
            continue
        m = _FIELD.fullmatch(part)
        if m is None:
            raise ValueError(f"unsupported field {part.strip()!r} in filter pattern {pattern!r}")
        value = m.group("value")
        quoted = value is not None and len(value) >= 2 and value[0] == value[-1] == '"'
        fields.append(_Field(op=m.group("op"), value=value[1:-1] if quoted else value, quoted=quoted))
    return fields


def tokenize_log_event(message: str) -> list[str]:
    """Split a log event into fields the way space-delimited filters do.

    Fields are separated by runs of whitespace; a field that starts with `"` runs to the next `"` and one
    that starts with `[` to the next `]` (their delimiters are not part of the value).
    """
    tokens: list[str] = []
    i, n = 0, len(message)
    while i < n:
        if message[i].isspace():
            i += 1
            continue
        closer = {'"': '"', "[": "]"}.get(message[i])
        if closer is not None:
            end = message.find(closer, i + 1)
            if end != -1:
                tokens.append(message[i + 1 : end])
                i = end + 1
                continue
        j = i
        while j < n and not message[j].isspace():
            j += 1
        tokens.append(message[i:j])
        i = j
    return tokens


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _field_matches(field: _Field, token: str) -> bool:
    if field.op is None or field.value is None:
        return True
    if field.op in ("=", "!=") and (field.quoted or _number(field.value) is None):
        regex = "".join(".*" if c == "*" else re.escape(c) for c in field.value)
        equal = re.fullmatch(regex, token) is not None
        return equal if field.op == "=" else not equal
    want, got = _number(field.value), _number(token)
    if want is None or got is None:
        return False
    return {
        "=": got == want,
        "!=": got != want,
        ">": got > want,
        "<": got < want,
        ">=": got >= want,
        "<=": got <= want,
    }[field.op]


def _match(fields: Sequence[_Field], tokens: Sequence[str]) -> bool:
    if not fields:
        return not tokens
    head, rest = fields[0], fields[1:]
    if head.ellipsis:
        return any(_match(rest, tokens[k:]) for k in range(len(tokens) + 1))
    return bool(tokens) and _field_matches(head, tokens[0]) and _match(rest, tokens[1:])


def filter_pattern_matches(pattern: str, message: str) -> bool:
    """Whether the space-delimited `pattern` matches the log event `message` (the subset used here)."""
    return _match(_parse_pattern(pattern), tokenize_log_event(message))
