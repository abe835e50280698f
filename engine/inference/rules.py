"""Business rules of a recommendation request: which items may be recommended, and which are
pushed up, applied to the whole catalogue before the top-k is taken (never by filtering a short
list, so a request gets k items whenever k items are eligible).

    exclude            raw item ids never recommended (bought, shown already, out of policy)
    only_available     items whose latest `available` is 0 are left out (unknown: kept)
    categories         only items whose category path holds one of these category ids
    boost_categories   items whose path holds one of these get `boost` added to their score (the
                       model's scale: a GNN's logit, so +1 multiplies an item's odds by e)

Categories and availability come from the dataset's item metadata (`sessrec data items`); a rule
that needs them on a dataset without it is an error, not a silent no-op. `Rules.parse` reads the
one-line form the app's Recommend panel takes: `-355908 -248676 cat:12 boost:7+1.5 available`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.core.errors import InputError

RULES_SYNTAX = ("-ID excludes an item, cat:ID keeps only a category, boost:ID or boost:ID+1.5 lifts one, "
                "available keeps only available items")


@dataclass(frozen=True)
class Rules:
    exclude: tuple[int, ...] = ()
    only_available: bool = False
    categories: tuple[int, ...] = ()
    boost_categories: tuple[int, ...] = ()
    boost: float = 1.0

    @property
    def empty(self) -> bool:
        return not (self.exclude or self.only_available or self.categories or self.boost_categories)

    @property
    def needs_metadata(self) -> bool:
        return bool(self.only_available or self.categories or self.boost_categories)

    @classmethod
    def of(cls, exclude=(), only_available: bool = False, categories=(), boost_categories=(),
           boost: float = 1.0) -> "Rules":
        """From any sequences (request fields, flags): sorted, distinct, hashable."""
        if not np.isfinite(boost):
            raise InputError(f"boost must be a finite number, got {boost}")
        return cls(tuple(sorted(set(int(i) for i in exclude))), bool(only_available),
                   tuple(sorted(set(int(c) for c in categories))),
                   tuple(sorted(set(int(c) for c in boost_categories))), float(boost))

    @classmethod
    def parse(cls, text: str) -> "Rules":
        """The app's one-line form (see the module docstring); InputError naming the bad token."""
        from engine.data.items import parse_item_id
        exclude, cats, boosted, boost, available = [], [], [], None, False
        def ident(tok: str, part: str) -> int:
            try:
                return parse_item_id(part)
            except InputError as e:
                raise InputError(f"rule {tok!r}: {e}") from None
        for tok in text.replace(",", " ").split():
            low = tok.lower()
            if low in ("available", "avail", "instock"):
                available = True
            elif low.startswith("-") and len(tok) > 1:
                exclude.append(ident(tok, tok[1:]))
            elif low.startswith("cat:"):
                cats.append(ident(tok, tok[4:]))
            elif low.startswith("boost:"):
                cat, _, amount = tok[6:].partition("+")
                boosted.append(ident(tok, cat))
                if amount:
                    try:
                        value = float(amount)
                    except ValueError:
                        raise InputError(f"rule {tok!r}: the boost after '+' is not a number") from None
                    if boost is not None and value != boost:
                        raise InputError(f"rule {tok!r}: one boost for all boosted categories (got {boost} before)")
                    boost = value
            else:
                raise InputError(f"rule {tok!r} not understood: {RULES_SYNTAX}")
        return cls.of(exclude, available, cats, boosted, 1.0 if boost is None else boost)

    def text(self) -> str:
        """The inverse of `parse`."""
        parts = [f"-{i}" for i in self.exclude] + [f"cat:{c}" for c in self.categories]
        parts += [f"boost:{c}" + (f"+{self.boost:g}" if self.boost != 1.0 else "") for c in self.boost_categories]
        return " ".join(parts + (["available"] if self.only_available else []))


@dataclass
class RuleMask:
    """A request's rules over the catalogue's indices 0..T-1: eligible items and score offsets."""

    eligible: np.ndarray        # bool [T] (index 0, padding: never)
    bias: np.ndarray            # float32 [T]: the boost of boosted eligible items, else 0
    boosted: np.ndarray         # int64: indices of boosted eligible items

    @property
    def n_eligible(self) -> int:
        return int(self.eligible.sum())


def rule_mask(rules: Rules, encode, n_table: int, paths: np.ndarray | None,
              available: np.ndarray | None) -> RuleMask:
    """The mask of `rules` over a catalogue of `n_table` rows: `encode` maps raw ids to indices (0:
    unknown), `paths` holds each index's category path (int64 [T, depth], -1 padding) and
    `available` its availability (int8 [T]: 1, 0, -1 unknown), None without metadata."""
    if rules.needs_metadata and paths is None:
        raise InputError("the rules only_available, categories and boost_categories need item metadata; "
                         "attach it with `sessrec data items NAME PATH ...` and rebuild")
    eligible = np.ones(n_table, dtype=bool)
    eligible[0] = False
    if rules.exclude:
        idx = encode(np.asarray(rules.exclude, np.int64))
        eligible[idx[idx > 0]] = False
    if rules.only_available:
        eligible &= available != 0
    if rules.categories:
        eligible &= np.isin(paths, rules.categories).any(1)
    bias = np.zeros(n_table, dtype=np.float32)
    boosted = np.zeros(0, np.int64)
    if rules.boost_categories:
        boosted = np.flatnonzero(np.isin(paths, rules.boost_categories).any(1) & eligible)
        bias[boosted] = rules.boost
    return RuleMask(eligible, bias, boosted)
