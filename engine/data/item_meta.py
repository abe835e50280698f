"""Item metadata: what an item is (name, category path, price, availability), keyed by raw item id.

Read by the pipeline's `metadata` stage from what `sessrec data items NAME PATH...` attached:

- an item table, CSV/TSV (delimiter sniffed, plain or compressed) or Parquet, its columns named by
  `--columns item=COL[,name=COL][,category=COL][,price=COL][,available=COL]`. A category is an id
  (a whole number) or text; text may be a path `Shoes > Running > Trail` (each level a category).
  `available` reads 1/0, true/false, yes/no, in stock/out of stock; a price may carry a currency
  sign or RetailRocket's `n` prefix. A later row of the same item wins;
- RetailRocket's `item_properties_part1.csv` / `part2.csv` (timestamp,itemid,property,value): the
  latest value per item of `categoryid` and `available` (and of `price` and `name`, which the demo
  writes; RetailRocket hashes its other properties), and `category_tree.csv`
  (categoryid,parentid): each category's path from its root.

The stage writes two tables (`metadata/items.parquet`: raw_id, name, category, price, available;
`metadata/categories.parquet`: id, parent, name) and its coverage: the share of the log's items and
of its events that have metadata. Models read it through `ItemMeta` and encode it with a
`FeatureSpec` fitted on the training items (`engine.models.gnn`: category and price embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.core.atomic import atomic_path
from engine.core.errors import InputError
from engine.core.lookup import find_sorted
from engine.core.mapping import parse_mapping
from engine.core.schema import ItemField, values
from engine.data.format_specs import ITEMS_FILE_TEXT
from engine.data.log_values import as_plain, parse_whole

RR_PROPERTIES_HEADER = ("timestamp", "itemid", "property", "value")
RR_TREE_HEADER = ("categoryid", "parentid")
RR_PROPERTIES = ("categoryid", "available", "price", "name")
MAX_DEPTH = 8             # levels of a category path kept (the leaf and its nearest ancestors)
MAX_CHAIN = 64            # a parent chain longer than this is a cycle (or not a category tree)
PRICE_BUCKETS = 10
_TRUE = ("1", "true", "yes", "y", "t", "in stock", "instock", "available")
_FALSE = ("0", "false", "no", "n", "f", "out of stock", "outofstock", "unavailable", "sold out")
_PATH_SEPARATOR = ">"


@dataclass
class CategoryTree:
    """Categories (ids sorted) with their parent (-1: a root) and name (None: only an id)."""

    ids: np.ndarray
    parent: np.ndarray
    names: list[str | None]

    @classmethod
    def empty(cls) -> "CategoryTree":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), [])

    def __len__(self) -> int:
        return len(self.ids)

    def position(self, cats: np.ndarray) -> np.ndarray:
        """Row of each category id in the tree (-1: not in it)."""
        return find_sorted(self.ids, np.asarray(cats, np.int64))

    def paths(self, cats: np.ndarray, depth: int = MAX_DEPTH) -> np.ndarray:
        """int64 [n, depth]: each category's path from its root (root first, -1 padding after the
        leaf); a path deeper than `depth` keeps its `depth` deepest levels; -1 rows for no category.
        A category missing from the tree is its own root."""
        cats = np.asarray(cats, np.int64)
        chain = np.full((len(cats), depth), -1, np.int64)        # leaf first
        cur = cats.copy()
        for level in range(depth):
            chain[:, level] = cur
            pos = self.position(cur)
            cur = np.where((cur >= 0) & (pos >= 0), self.parent[np.maximum(pos, 0)], -1)
            if (cur < 0).all():
                break
        n = (chain >= 0).sum(1)
        j = np.arange(depth)
        src = np.clip(n[:, None] - 1 - j[None, :], 0, depth - 1)
        out = np.take_along_axis(chain, src, 1)
        return np.where(j[None, :] < n[:, None], out, -1)

    def depth_of(self) -> int:
        """The longest path in the tree (0 when empty)."""
        if not len(self.ids):
            return 0
        return int((self.paths(self.ids, MAX_CHAIN) >= 0).sum(1).max())

    def check(self, source: str) -> None:
        """InputError when a parent chain loops (a category is its own ancestor)."""
        if not len(self.ids):
            return
        cur = self.ids.copy()
        for _ in range(MAX_CHAIN):
            pos = self.position(cur)
            cur = np.where((cur >= 0) & (pos >= 0), self.parent[np.maximum(pos, 0)], -1)
            if (cur < 0).all():
                return
        bad = int(self.ids[np.flatnonzero(cur >= 0)[0]])
        raise InputError(f"{source}: the category tree loops: category {bad}'s parents lead back to "
                         f"itself (or the tree is deeper than {MAX_CHAIN} levels); expected "
                         f"categoryid,parentid rows of a tree")


@dataclass
class ItemMeta:
    """Metadata of items by raw id (sorted, unique); -1 / NaN / None where unknown."""

    raw_ids: np.ndarray           # int64 [M]
    names: list[str | None]
    category: np.ndarray          # int64 [M], -1: none
    price: np.ndarray             # float64 [M], NaN: unknown
    available: np.ndarray         # int8 [M]: 1, 0, -1 unknown
    tree: CategoryTree

    def __len__(self) -> int:
        return len(self.raw_ids)

    def rows(self, raw: np.ndarray) -> np.ndarray:
        """Row of each raw id (-1: no metadata)."""
        return find_sorted(self.raw_ids, np.asarray(raw, np.int64))

    def category_of(self, raw: np.ndarray) -> np.ndarray:
        r = self.rows(raw)
        return np.where(r >= 0, self.category[np.maximum(r, 0)], -1)

    def available_of(self, raw: np.ndarray) -> np.ndarray:
        r = self.rows(raw)
        return np.where(r >= 0, self.available[np.maximum(r, 0)], -1).astype(np.int8)

    def price_of(self, raw: np.ndarray) -> np.ndarray:
        r = self.rows(raw)
        return np.where(r >= 0, self.price[np.maximum(r, 0)], np.nan)

    def paths_of(self, raw: np.ndarray, depth: int = MAX_DEPTH) -> np.ndarray:
        """int64 [n, depth] category path of each raw id, root first (-1 padding / no category)."""
        return self.tree.paths(self.category_of(raw), depth)

    def category_name(self, cat: int) -> str:
        pos = int(self.tree.position(np.array([cat]))[0])
        name = self.tree.names[pos] if pos >= 0 else None
        return name if name else str(cat)

    def describe(self, raw_ids: Iterable[int]) -> list[dict[str, Any]]:
        """What each item is, for people (the app, `sessrec recommend`, the API): name, category (the
        leaf id), path (the names or ids from the root), price and availability; {} without metadata."""
        raw = np.fromiter(raw_ids, np.int64)
        rows = self.rows(raw)
        paths = self.tree.paths(np.where(rows >= 0, self.category[np.maximum(rows, 0)], -1))
        out: list[dict[str, Any]] = []
        for i, r in enumerate(rows.tolist()):
            if r < 0:
                out.append({})
                continue
            d: dict[str, Any] = {}
            if self.names[r]:
                d["name"] = self.names[r]
            if self.category[r] >= 0:
                d["category"] = int(self.category[r])
                d["path"] = [self.category_name(c) for c in paths[i][paths[i] >= 0].tolist()]
            if self.price[r] == self.price[r]:
                d["price"] = float(self.price[r])
            if self.available[r] >= 0:
                d["available"] = bool(self.available[r])
            out.append(d)
        return out

    # ---- persistence --------------------------------------------------------------------------
    def write(self, items_path: Path, categories_path: Path) -> None:
        with atomic_path(items_path) as tmp:
            pq.write_table(pa.table({"raw_id": pa.array(self.raw_ids, pa.int64()),
                                     "name": pa.array(self.names, pa.string()),
                                     "category": pa.array(self.category, pa.int64()),
                                     "price": pa.array(self.price, pa.float64()),
                                     "available": pa.array(self.available, pa.int8())}), tmp, compression="zstd")
        with atomic_path(categories_path) as tmp:
            pq.write_table(pa.table({"id": pa.array(self.tree.ids, pa.int64()),
                                     "parent": pa.array(self.tree.parent, pa.int64()),
                                     "name": pa.array(self.tree.names, pa.string())}), tmp, compression="zstd")

    @classmethod
    def read(cls, items_path: Path, categories_path: Path) -> "ItemMeta":
        t = pq.read_table(items_path)
        c = pq.read_table(categories_path)
        tree = CategoryTree(c.column("id").to_numpy().astype(np.int64), c.column("parent").to_numpy().astype(np.int64),
                            c.column("name").to_pylist())
        return cls(t.column("raw_id").to_numpy().astype(np.int64), t.column("name").to_pylist(),
                   t.column("category").to_numpy().astype(np.int64), t.column("price").to_numpy().astype(np.float64),
                   t.column("available").to_numpy().astype(np.int8), tree)


# ---- model features --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureSpec:
    """How a model turns metadata into feature ids, fitted on the training items: category ids seen
    on their paths (index 1..C, 0: none or a category unseen in training), the path depth, and
    price bucket edges (quantiles of log1p(price), buckets 1..B, 0: no price). Kept in the
    checkpoint, so an item added after training (a new category is read through its known
    ancestors) is encoded as the model was trained."""

    categories: tuple[int, ...]
    depth: int
    price_edges: tuple[float, ...]

    @property
    def n_categories(self) -> int:
        return len(self.categories)

    @property
    def n_price_buckets(self) -> int:
        return len(self.price_edges) + 1 if self.price_edges else 0

    @classmethod
    def fit(cls, meta: ItemMeta, train_raw: np.ndarray, buckets: int = PRICE_BUCKETS) -> "FeatureSpec":
        paths = meta.paths_of(train_raw)
        depth = max(1, int((paths >= 0).sum(1).max(initial=0)))
        cats = np.unique(paths[paths >= 0])
        price = meta.price_of(train_raw)
        price = price[np.isfinite(price) & (price >= 0)]
        edges: tuple[float, ...] = ()
        if len(price) >= buckets:
            q = np.quantile(np.log1p(price), np.linspace(0, 1, buckets + 1)[1:-1])
            edges = tuple(float(x) for x in np.unique(q))
        return cls(tuple(int(c) for c in cats), depth, edges)

    def encode(self, meta: ItemMeta | None, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(category indices int64 [n, depth], price buckets int64 [n]) of raw ids; zeros where the
        metadata says nothing (or `meta` is None)."""
        raw = np.asarray(raw, np.int64)
        if meta is None:
            return np.zeros((len(raw), self.depth), np.int64), np.zeros(len(raw), np.int64)
        paths = meta.paths_of(raw, MAX_DEPTH)
        n = (paths >= 0).sum(1)
        # keep the `depth` deepest levels (right-aligned into a left-aligned row)
        j = np.arange(self.depth)
        start = np.maximum(n - self.depth, 0)
        src = np.clip(start[:, None] + j[None, :], 0, MAX_DEPTH - 1)
        deep = np.where(j[None, :] < np.minimum(n, self.depth)[:, None], np.take_along_axis(paths, src, 1), -1)
        known = np.asarray(self.categories, np.int64)
        idx = np.where(deep >= 0, find_sorted(known, deep) + 1, 0)
        price = meta.price_of(raw)
        bucket = np.zeros(len(raw), np.int64)
        if self.price_edges:
            ok = np.isfinite(price) & (price >= 0)
            bucket[ok] = np.searchsorted(np.asarray(self.price_edges), np.log1p(price[ok]), side="right") + 1
        return idx, bucket

    def to_dict(self) -> dict[str, Any]:
        return {"categories": list(self.categories), "depth": self.depth, "price_edges": list(self.price_edges)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSpec":
        return cls(tuple(int(c) for c in d["categories"]), int(d["depth"]), tuple(float(x) for x in d["price_edges"]))


@dataclass(frozen=True)
class ItemFeatures:
    """A model's feature ids of items 0..V (row 0: padding, zeros) and the spec that made them."""

    spec: FeatureSpec
    category: np.ndarray          # int64 [V+1, depth]
    price: np.ndarray             # int64 [V+1]

    @classmethod
    def of(cls, spec: FeatureSpec, meta: ItemMeta | None, raw_ids: np.ndarray) -> "ItemFeatures":
        """Features of the items with raw ids `raw_ids` (index i+1 is raw_ids[i])."""
        cat, price = spec.encode(meta, raw_ids)
        return cls(spec, np.vstack([np.zeros((1, spec.depth), np.int64), cat]), np.concatenate([[0], price]))

    @classmethod
    def placeholder(cls, spec: FeatureSpec, n_items: int) -> "ItemFeatures":
        """Zeros of the right shape: a checkpoint's weights hold the real ids."""
        return cls(spec, np.zeros((n_items + 1, spec.depth), np.int64), np.zeros(n_items + 1, np.int64))


# ---- reading the sources -------------------------------------------------------------------------

def item_file_kind(path: Path) -> str:
    """"properties" (RetailRocket's item_properties), "tree" (category_tree.csv) or "table"."""
    from engine.data.formats import header_line, probe_file
    container, _ = probe_file(path, ITEMS_FILE_TEXT)
    if container != "csv":
        return "table"
    names = tuple(c.strip().strip('"').lower() for c in header_line(path, ITEMS_FILE_TEXT).split(","))
    return {RR_PROPERTIES_HEADER: "properties", RR_TREE_HEADER: "tree"}.get(names, "table")


def parse_item_columns(text: str) -> dict[str, str]:
    """`--columns` of an item table: {field: column}, item and at least one other field."""
    cols = parse_mapping(text, "columns", keys=values(ItemField))
    if ItemField.ITEM not in cols or len(cols) < 2:
        raise InputError(f"columns: {text or '(none)'!r}; an item table needs --columns item=COL and at "
                         f"least one of name, category, price, available (e.g. item=sku,category=cat)")
    return cols


def read_item_sources(paths: list[Path], columns: dict[str, str] | None) -> tuple[ItemMeta, dict]:
    """The metadata of every attached file together: item tables and property files give items
    (a later file's value of a field wins), category trees give the tree."""
    parts: list[dict[str, Any]] = []
    tree = CategoryTree.empty()
    text_categories = TextCategories()
    files = []
    for path in paths:
        kind = item_file_kind(path)
        if kind == "tree":
            tree = _read_tree(path)
        elif kind == "properties":
            parts.append(_read_properties(path))
        else:
            if columns is None:
                raise InputError(f"{path}: an item table needs --columns item=COL,... (its header is not "
                                 f"RetailRocket's {','.join(RR_PROPERTIES_HEADER)} or {','.join(RR_TREE_HEADER)})")
            parts.append(_read_table(path, columns, text_categories))
        files.append({"path": str(path), "kind": kind,
                      **(parts[-1]["stats"] if kind != "tree" else {"categories": len(tree)})})
    if not parts:
        raise InputError(f"{', '.join(map(str, paths))}: no item table or property file (a category tree "
                         f"alone says nothing about items)")
    meta = _merge(parts, tree)
    if len(tree) and any(p.get("tree") is not None for p in parts):
        raise InputError("an item table with text categories brings its own category tree (its paths); "
                         "drop the category_tree file")
    meta.tree.check(", ".join(str(p) for p in paths))
    return meta, {"files": files}


def _read_tree(path: Path) -> CategoryTree:
    t = pacsv.read_csv(path, read_options=pacsv.ReadOptions(skip_rows=1, column_names=list(RR_TREE_HEADER)),
                       convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in RR_TREE_HEADER}))
    cid, cok = parse_whole(pc.ascii_trim_whitespace(t.column("categoryid").combine_chunks()))
    par_s = pc.ascii_trim_whitespace(t.column("parentid").combine_chunks())
    par, pok = parse_whole(par_s)
    empty = pc.equal(pc.utf8_length(par_s), 0).to_numpy(zero_copy_only=False)
    if not cok.all() or not (pok | empty).all():
        line = int(np.flatnonzero(~cok | ~(pok | empty))[0]) + 2
        raise InputError(f"{path}: line {line}: expected categoryid,parentid as whole numbers (an empty "
                         f"parent for a root)")
    parent = np.where(empty, -1, par)
    order = np.argsort(cid, kind="stable")
    ids, parent = cid[order], parent[order]
    last = np.append(ids[1:] != ids[:-1], True)          # a category given twice: its last row
    return CategoryTree(ids[last], parent[last], [None] * int(last.sum()))


def _read_properties(path: Path) -> dict[str, Any]:
    """RetailRocket's item_properties: the latest value per item of each property read."""
    from engine.data.formats import probe_file
    _, compression = probe_file(path, ITEMS_FILE_TEXT)
    reader = pacsv.open_csv(pa.input_stream(str(path), compression=compression),
                            read_options=pacsv.ReadOptions(skip_rows=1, column_names=list(RR_PROPERTIES_HEADER),
                                                           block_size=16 << 20),
                            convert_options=pacsv.ConvertOptions(column_types={
                                "timestamp": pa.int64(), "itemid": pa.int64(), "property": pa.string(),
                                "value": pa.string()}))
    wanted = pa.array(RR_PROPERTIES)
    keep: list[pa.RecordBatch] = []
    rows = 0
    try:
        for b in reader:
            rows += b.num_rows
            mask = pc.is_in(b.column("property"), value_set=wanted)
            keep.append(b.filter(mask))
    except pa.ArrowInvalid as e:
        raise InputError(f"{path}: cannot read it as RetailRocket item properties "
                         f"({','.join(RR_PROPERTIES_HEADER)}): {e}") from None
    t = pa.Table.from_batches(keep, schema=reader.schema) if keep else None
    out: dict[str, Any] = {"stats": {"rows": rows}}
    if t is None or t.num_rows == 0:
        out["items"] = np.zeros(0, np.int64)
        return out
    prop = t.column("property").to_numpy(zero_copy_only=False)
    for name in RR_PROPERTIES:
        sub = t.filter(pa.array(prop == name))
        if not sub.num_rows:
            continue
        items = sub.column("itemid").to_numpy()
        ts = sub.column("timestamp").to_numpy()
        order = np.lexsort((ts, items))                      # by item, then time: the last is the latest
        items, vals = items[order], sub.column("value").take(pa.array(order))
        last = np.append(items[1:] != items[:-1], True)
        out[name] = (items[last], vals.filter(pa.array(last)))
    out["items"] = np.unique(np.concatenate([v[0] for k, v in out.items() if k in RR_PROPERTIES]))
    fields: dict[str, Any] = {}
    if "categoryid" in out:
        cat, ok = parse_whole(pc.ascii_trim_whitespace(out["categoryid"][1]))
        fields["category"] = (out["categoryid"][0], np.where(ok, cat, -1))
    if "available" in out:
        fields["available"] = (out["available"][0], _parse_available(out["available"][1]))
    if "price" in out:
        fields["price"] = (out["price"][0], _parse_price(out["price"][1]))
    if "name" in out:
        fields["name"] = (out["name"][0], out["name"][1].to_pylist())
    out["fields"] = fields
    out["stats"].update({"items": int(len(out["items"])), **{f"with_{k}": int(len(v[0])) for k, v in fields.items()}})
    return out


def _read_table(path: Path, columns: dict[str, str], text_categories: TextCategories) -> dict[str, Any]:
    from engine.data.formats import header_line, probe_file, sniff_header
    container, compression = probe_file(path, ITEMS_FILE_TEXT)
    wanted = list(columns.values())
    if container == "parquet":
        try:
            t = pq.read_table(path, columns=wanted)
        except (pa.ArrowException, OSError) as e:
            names = pq.ParquetFile(path).schema_arrow.names if container == "parquet" else []
            raise InputError(f"{path}: cannot read the columns {', '.join(wanted)} ({e}); its columns are "
                             f"{', '.join(names)}") from None
        first = 1
    elif container == "csv":
        names, delimiter = sniff_header(path, header_line(path, ITEMS_FILE_TEXT), wanted)
        t = pacsv.read_csv(pa.input_stream(str(path), compression=compression),
                           read_options=pacsv.ReadOptions(skip_rows=1, column_names=list(names)),
                           parse_options=pacsv.ParseOptions(delimiter=delimiter),
                           convert_options=pacsv.ConvertOptions(include_columns=wanted,
                                                                column_types={c: pa.string() for c in wanted}))
        first = 2
    else:
        raise InputError(f"{path}: JSON Lines item tables are not read; expected {ITEMS_FILE_TEXT}")
    col = {f: as_plain(t.column(c)) for f, c in columns.items()}
    item_text = pc.ascii_trim_whitespace(col["item"].cast(pa.string()))
    raw, ok = parse_whole(pc.fill_null(item_text, ""))
    bad = np.flatnonzero(~ok)
    keep = pa.array(ok)
    stats: dict[str, Any] = {"rows": t.num_rows, "bad_item_rows": int(len(bad))}
    if len(bad):
        stats["bad_item_first_rows"] = (bad[:5] + first).tolist()
    if not ok.any():
        raise InputError(f"{path}: no row has an item id in column {columns['item']!r} (expected whole numbers; "
                         f"first bad {'line' if first == 2 else 'row'}s {', '.join(map(str, (bad[:5] + first).tolist()))})")
    raw = raw[ok]
    fields: dict[str, Any] = {}
    out: dict[str, Any] = {"stats": stats, "fields": fields}
    if ItemField.NAME in col:
        names_col = pc.ascii_trim_whitespace(col["name"].cast(pa.string())).filter(keep)
        fields["name"] = (raw, [v or None for v in names_col.to_pylist()])
    if ItemField.CATEGORY in col:
        c = col["category"].filter(keep)
        if pa.types.is_integer(c.type):
            fields["category"] = (raw, pc.fill_null(c.cast(pa.int64()), -1).to_numpy())
        else:
            text = pc.fill_null(pc.ascii_trim_whitespace(c.cast(pa.string())), "")
            whole, wok = parse_whole(text)
            present = pc.greater(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
            if wok[present].all():
                fields["category"] = (raw, np.where(present, whole, -1))
            else:
                fields["category"] = (raw, text_categories.encode(text.to_pylist()))
                out["tree"] = text_categories.tree()      # every path so far: a later table's tree holds this one's
    if ItemField.PRICE in col:
        fields["price"] = (raw, _parse_price(col["price"].filter(keep)))
    if ItemField.AVAILABLE in col:
        fields["available"] = (raw, _parse_available(col["available"].filter(keep)))
    out["items"] = np.unique(raw)
    stats["items"] = int(len(out["items"]))
    return out


class TextCategories:
    """Text categories ('Shoes > Running') as ids 1..C in order of first appearance, with their
    tree (each path prefix is a category, named by its last level). One instance serves every table
    of a dataset, so that two tables naming the same path give it the same id and one tree holds all."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, ...], int] = {}
        self.parent: list[int] = []
        self.names: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.full(len(texts), -1, np.int64)
        for i, text in enumerate(texts):       # one pass over distinct texts would do; tables are small
            levels = tuple(p.strip() for p in text.split(_PATH_SEPARATOR) if p.strip()) if text else ()
            up = -1
            for depth in range(1, len(levels) + 1):
                key = levels[:depth]
                if key not in self.ids:
                    self.ids[key] = len(self.ids) + 1
                    self.parent.append(up)
                    self.names.append(key[-1])
                up = self.ids[key]
            out[i] = up
        return out

    def tree(self) -> CategoryTree:
        return CategoryTree(np.arange(1, len(self.ids) + 1, dtype=np.int64), np.array(self.parent, np.int64),
                            list(self.names))


def _parse_available(arr: pa.Array) -> np.ndarray:
    arr = as_plain(arr)
    if pa.types.is_boolean(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        v = pc.fill_null(arr.cast(pa.float64()), -1.0).to_numpy()
        return np.where(v < 0, -1, (v > 0).astype(np.int8)).astype(np.int8)
    s = pc.utf8_lower(pc.ascii_trim_whitespace(pc.fill_null(arr.cast(pa.string()), "")))
    yes = pc.is_in(s, value_set=pa.array(_TRUE)).to_numpy(zero_copy_only=False)
    no = pc.is_in(s, value_set=pa.array(_FALSE)).to_numpy(zero_copy_only=False)
    return np.where(yes, 1, np.where(no, 0, -1)).astype(np.int8)


def _parse_price(arr: pa.Array) -> np.ndarray:
    """Numbers; text may carry RetailRocket's 'n' prefix, a currency sign or thousands commas."""
    arr = as_plain(arr)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        return pc.fill_null(arr.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    s = pc.ascii_trim_whitespace(pc.fill_null(arr.cast(pa.string()), ""))
    s = pc.replace_substring_regex(s, r"^[nN$€£¥]|,|\s", "")
    ok = pc.match_substring_regex(s, r"^([0-9]+\.?[0-9]*|\.[0-9]+)$").to_numpy(zero_copy_only=False)
    return np.where(ok, pc.if_else(pa.array(ok), s, "0").cast(pa.float64()).to_numpy(), np.nan)


def _merge(parts: list[dict[str, Any]], tree: CategoryTree) -> ItemMeta:
    """One row per item over every part; for each field the last part (and within it the last row)
    that gives the item a value wins."""
    raw = np.unique(np.concatenate([p["items"] for p in parts]))
    meta = ItemMeta(raw, [None] * len(raw), np.full(len(raw), -1, np.int64), np.full(len(raw), np.nan),
                    np.full(len(raw), -1, np.int8), tree)
    for p in parts:
        if p.get("tree") is not None:
            meta.tree = p["tree"]
        for name, (items, vals) in p.get("fields", {}).items():
            # rows that give a value (an empty cell does not erase an earlier row's)
            if name == "name":
                has = np.array([bool(v) for v in vals], dtype=bool) if len(vals) else np.zeros(0, bool)
            else:
                arr = np.asarray(vals)
                has = np.isfinite(arr) if name == "price" else arr >= 0
            items = np.asarray(items)[has]
            vals = [v for v, h in zip(vals, has) if h] if name == "name" else np.asarray(vals)[has]
            # the last of them for each item (files list later rows later)
            rev = np.arange(len(items))[::-1]
            _, first_rev = np.unique(np.asarray(items)[rev], return_index=True)
            pick = rev[first_rev]
            items = np.asarray(items)[pick]
            rows = np.searchsorted(raw, items)
            if name == "name":
                names = np.array(meta.names, dtype=object)
                picked = np.array(vals, dtype=object)[pick]
                present = np.array([bool(v) for v in picked], dtype=bool) if len(picked) else np.zeros(0, bool)
                names[rows[present]] = picked[present]
                meta.names = names.tolist()
                continue
            v = np.asarray(vals)[pick]
            target = {"category": meta.category, "price": meta.price, "available": meta.available}[name]
            known = v >= 0 if name != "price" else np.isfinite(v)
            target[rows[known]] = v[known]
    return meta


def coverage(meta: ItemMeta, items: np.ndarray) -> dict[str, Any]:
    """How much of a log the metadata covers: its distinct items and its events (`items`: the item
    of every event)."""
    items = np.asarray(items, np.int64)
    uniq, counts = np.unique(items, return_counts=True)
    has = meta.rows(uniq) >= 0
    n_ev = int(counts.sum())
    return {"log_items": int(len(uniq)), "log_items_with_metadata": int(has.sum()),
            "item_coverage": round(float(has.mean()), 4) if len(uniq) else 0.0,
            "event_coverage": round(float(counts[has].sum() / n_ev), 4) if n_ev else 0.0,
            "metadata_items_not_in_log": int(len(meta) - has.sum())}


def meta_stats(meta: ItemMeta) -> dict[str, Any]:
    known = meta.category >= 0
    return {"items": int(len(meta)), "with_category": int(known.sum()),
            "with_name": int(sum(1 for n in meta.names if n)), "with_price": int(np.isfinite(meta.price).sum()),
            "available": int((meta.available == 1).sum()), "unavailable": int((meta.available == 0).sum()),
            "categories": int(len(meta.tree)) or int(len(np.unique(meta.category[known]))),
            "category_depth": meta.tree.depth_of() if len(meta.tree) else int(known.any())}
