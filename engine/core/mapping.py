"""`KEY=VALUE,KEY=VALUE` lists, the one syntax of the mapping flags: `--columns item=product_id,
time=ts` (which file column holds each role), `--events click=view,cart=addtocart` (which canonical
event type each raw value is) and the item table's `--columns item=sku,category=cat`.

Parsed here, in the standard library only: the configs check them (`engine.core.config`) before
anything is read, and the CLI prints them without loading numpy.
"""

from __future__ import annotations

from typing import Iterable

from engine.core.errors import InputError


def parse_mapping(text: str, what: str, keys: Iterable[str] | None = None,
                  values: Iterable[str] | None = None) -> dict[str, str]:
    """'a=x, b=y' -> {"a": "x", "b": "y"} (order kept; spaces around names dropped).

    `keys` / `values`: the allowed ones (None: any non-empty name). Every problem is one InputError
    naming `what` (the flag), the pair and what was expected."""
    allowed_k = tuple(keys) if keys is not None else None
    allowed_v = tuple(values) if values is not None else None
    out: dict[str, str] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not key or not value:
            raise InputError(f"{what}: {part!r} is not NAME=VALUE (expected a comma list like "
                             f"{_example(allowed_k, allowed_v)})")
        if allowed_k is not None and key not in allowed_k:
            raise InputError(f"{what}: unknown name {key!r} in {part!r}; expected one of {', '.join(allowed_k)}")
        if allowed_v is not None and value not in allowed_v:
            raise InputError(f"{what}: {value!r} in {part!r} is not one of {', '.join(allowed_v)}")
        if key in out:
            raise InputError(f"{what}: {key!r} is given twice ({key}={out[key]} and {part})")
        out[key] = value
    return out


def mapping_text(mapping: dict[str, str]) -> str:
    """The inverse of `parse_mapping`: {"a": "x"} -> 'a=x'."""
    return ",".join(f"{k}={v}" for k, v in mapping.items())


def _example(keys: tuple[str, ...] | None, values: tuple[str, ...] | None) -> str:
    k = keys or ("name", "other")
    v = values or ("column", "column2")
    return f"'{k[0]}={v[0]},{k[1 % len(k)]}={v[1 % len(v)]}'"
