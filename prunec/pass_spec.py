"""Parse a textual pipeline: ``"fold-batchnorm,drop-blocks(blocks=[1, 3]),remove-noops*,dce"``.

Steps are separated by top-level commas; options go in parentheses as ``key=value``
(values are Python literals; a bare word is a string); a trailing ``*`` repeats the step
until it reports no change.
"""

from __future__ import annotations

import ast
from typing import Any

from prunec.errors import ConfigError
from prunec.pass_manager import Step


def _split_top_level(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced brackets in pipeline '{text}'")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise ConfigError(f"unbalanced brackets in pipeline '{text}'")
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _value(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_step(text: str) -> Step:
    """One step: ``name``, ``name*`` or ``name(key=value, ...)``."""
    fixed_point = text.endswith("*")
    body = text[:-1].strip() if fixed_point else text
    name, _, rest = body.partition("(")
    name = name.strip()
    options: dict[str, Any] = {}
    if rest:
        if not rest.endswith(")"):
            raise ConfigError(f"step '{text}': options must end with ')', e.g. drop-blocks(blocks=[1, 3])")
        for item in _split_top_level(rest[:-1]):
            if not item:
                continue
            key, eq, raw = item.partition("=")
            if not eq:
                raise ConfigError(f"step '{text}': option '{item}' is not key=value")
            options[key.strip().replace("-", "_")] = _value(raw.strip())
    if not name:
        raise ConfigError(f"empty step in pipeline near '{text}'; separate pass names with single commas")
    return Step.of(name, fixed_point=fixed_point, **options)


def parse_pipeline(text: str) -> list[Step]:
    """All steps of a pipeline spec, in order."""
    if not text.strip():
        raise ConfigError("empty pipeline; pass --passes NAME[,NAME...] (list them with `prunec passes`)")
    return [parse_step(part) for part in _split_top_level(text)]
