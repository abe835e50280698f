"""Top-k next items for sessions typed as raw item ids, from a trained run or a baseline.

    rec = Recommender.load(ws.run(run_id))
    rec.recommend([355908, 248676], k=10)            # -> Recommendation (raw ids, scores, unknown ids, ...)
    rec.recommend_many([[355908], [1, 2]], k=10)     # one batched pass for several sessions

Raw ids not in the run's item index are reported as unknown and ignored; when none is known the
answer is the training popularity ranking, labelled as a fallback.

GNN runs score through their encoder (`SessionGNN.encode`; with the same contract, the run's encoder
compiled by AOTInductor, `runtime="compiled"`, or its ONNX export, `runtime="onnx"`): session vectors
and the repeat logits of the session's items, then either exact search (every item's dot product)
or a product-quantised fast scan that proposes candidates which are scored exactly (`search="pq"`;
see `engine.inference.item_search`); "auto" takes the scan for catalogues of `PQ_MIN_ITEMS` items and more.
Baselines and hybrids score every item with `score(batch)`.

With the dataset's item metadata (`sessrec data items`), the recommender also knows what items are:
`describe` gives each item's name, category path, price and availability (the answers carry them);
a GNN trained with item features is extended by the metadata's items that training never saw
(indices V+1.., scored from their features: `SessionGNN.set_extension`), so they can be recommended
and typed; business rules (`engine.inference.rules`) are applied over the whole catalogue before
the top-k, exact or PQ search alike; and `explain=True` says why each item was recommended
(`engine.inference.explain`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from engine.core.errors import InputError
from engine.core.schema import ModelKind, Runtime, Search, values
from engine.core.target import Target
from engine.core.workspace import RunDir, Workspace
from engine.data.artifacts import load_dataset, load_item_meta
from engine.data.batches import Batch, BatchBuilder, SessionStore
from engine.data.examples import make_examples
from engine.data.graph import CoocGraph
from engine.data.item_meta import ItemMeta
from engine.data.items import ItemIndex
from engine.data.manifest import Dataset
from engine.data.sessions import Sessions
from engine.inference.item_search import PQSearch
from engine.inference.rules import RuleMask, Rules, rule_mask
from engine.models.checkpoint import load_run
from engine.models.gnn import SessionGNN, candidate_scores, session_scores
from engine.models.registry import build_model, get_spec


@dataclass
class Recommendation:
    items: list[int]             # raw ids, best first
    scores: list[float]
    popularity: list[int]        # train count of each recommended item
    in_session: list[bool]       # the item already occurs in the typed session
    unknown: list[int]           # typed raw ids the model does not know (ignored)
    known: list[int]             # typed raw ids used
    fallback: bool               # True: no known id, popularity ranking
    source: str
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    info: list[dict] | None = None          # per item: name, category, path, price, available (metadata)
    explanations: list[dict] | None = None  # per item, when asked (engine.inference.explain)


SEARCHES = values(Search)
RUNTIMES = values(Runtime)
PQ_MIN_ITEMS = 20_000       # below this an exact pass costs ~2 ms or less at d = 256 on the dev CPU
EXACT_SUBSET = 8192         # rules leaving at most this many eligible (or boosted) items: those scored exactly


class Recommender:
    def __init__(self, model, items: ItemIndex, builder: BatchBuilder, source: str,
                 device: torch.device, meta: dict, encoder=None, held_out: Sessions | None = None,
                 item_meta: ItemMeta | None = None, graph: CoocGraph | None = None) -> None:
        self.model = model
        self.items = items
        self.builder = builder
        self.source = source
        self.device = device
        self.meta = meta
        # the GNN path: anything with encode(batch) and item_table() (SessionGNN, OnnxEncoder)
        self.encoder = encoder if encoder is not None else (model if isinstance(model, SessionGNN) else None)
        self.table = self.encoder.item_table().detach().float() if self.encoder is not None else None
        self.search: PQSearch | None = None
        self.held_out = held_out          # encoded test sessions: calibrate and measure a search
        self.n_trained = items.n_items    # V: the vocabulary the model was trained on
        self.graph = graph                # the train co-occurrence graph (explanations)
        self.item_meta: ItemMeta | None = None
        self._paths: np.ndarray | None = None          # category path of each index [T, depth]
        self._available: np.ndarray | None = None      # int8 [T]
        self._masks: dict[Rules, tuple[RuleMask, torch.Tensor, torch.Tensor]] = {}
        self._set_counts()
        if hasattr(model, "eval"):
            model.eval()
        if item_meta is not None:
            self.attach_metadata(item_meta)

    def _set_counts(self) -> None:
        counts = np.concatenate([[0], self.items.train_counts])
        self._pop_order = np.argsort(-counts[1:], kind="stable") + 1   # item indices by popularity
        self._counts = counts

    @property
    def n_table(self) -> int:
        """Rows of the catalogue: padding, the trained items and any new items of the metadata."""
        return self.items.n_items + 1

    def attach_metadata(self, meta: ItemMeta) -> None:
        """Know what items are (names, categories, availability) and, for a GNN trained with item
        features, extend the catalogue by the metadata's items it never saw (scored from their
        features). Call before `use_search` (the search covers the extended table)."""
        self.item_meta = meta
        gnn = self.model if isinstance(self.model, SessionGNN) else None
        if gnn is not None and gnn.features:
            from engine.evaluation.cold_start import catalogue_extension
            ext, new_raw = catalogue_extension(self.items, meta)
            if len(new_raw):
                gnn.set_extension(*gnn.feature_spec.encode(meta, new_raw))
                new_rows = gnn.item_vectors(torch.arange(self.n_trained + 1, ext.n_items + 1, device=self.device))
                self.table = torch.cat([self.table, new_rows.detach().float()]) if self.encoder is not gnn \
                    else gnn.item_table().detach().float()
                self.items = ext
                self.builder = BatchBuilder(self.builder.store, ext.n_items, self.builder.graph_mode, self.graph)
                self._set_counts()
                self.meta["new_items"] = int(len(new_raw))
        raw = np.concatenate([[-1], self.items.raw_ids])
        self._paths = meta.paths_of(raw)
        self._available = meta.available_of(raw)
        self._masks.clear()

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def load(cls, run: RunDir, device: str = "cpu", checkpoint: str = "best", runtime: str = "torch",
             search: str = "exact") -> "Recommender":
        """A run's model (its best checkpoint, else its last) with its dataset's item index, read
        from the workspace that holds the run. `runtime="compiled"` / `"onnx"`: the GNN's encoder runs
        as the run's AOTInductor package / in ONNX Runtime from the run's ONNX export (either made,
        with its parity check, when missing or stale)."""
        if runtime not in RUNTIMES:
            raise InputError(f"runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
        lr = load_run(run, checkpoint, device)
        model, data, cfg, path, dev = lr.model, lr.data, lr.cfg, lr.checkpoint, torch.device(device)
        meta = {"run_id": run.run_id, "model": cfg.model, "dataset": cfg.dataset, "epoch": lr.epoch,
                "checkpoint": path.name, "runtime": runtime}
        encoder = None
        if runtime != "torch" and not isinstance(model, SessionGNN):
            raise InputError(f"run {run.run_id} ({cfg.model}) has no {runtime} runtime: only GNN runs are "
                             f"exported; use --runtime torch")
        if runtime == "onnx":
            from engine.export.onnx_runtime import OnnxEncoder, ensure_run_onnx
            encoder = OnnxEncoder(ensure_run_onnx(run), threads=torch.get_num_threads())
        elif runtime == "compiled":
            from engine.export.compiled import CompiledEncoder, ensure_run_compiled
            encoder = CompiledEncoder(ensure_run_compiled(run, device), model, device=dev)
        if encoder is not None:
            encoder.check_items(data.items)
        item_meta, graph = _extras(run.workspace, cfg.dataset, data)
        rec = cls(model, data.items, cls._builder(model, data, dev), f"{cfg.model} (run {run.run_id})", dev,
                  meta, encoder=encoder, held_out=data.test, item_meta=item_meta, graph=graph)
        signature = f"{path.name}:{lr.checkpoint_stat.st_size}:{lr.checkpoint_stat.st_mtime_ns}"
        if rec.n_trained != rec.items.n_items:        # the catalogue extended by new items
            signature += f":catalogue:{rec.items.fingerprint()}"
        rec.use_search(search, cache=run.root / "search" / "pq.npz", signature=signature)
        return rec

    @classmethod
    def for_baseline(cls, ws: Workspace, dataset: str, name: str, params: dict | None = None,
                     device: str = "cpu") -> "Recommender":
        spec = get_spec(name)
        if spec.kind != ModelKind.BASELINE:
            raise InputError(f"{name} is not a baseline; train it first (sessrec train --model {name})")
        cfg = spec.resolve(params)
        data = load_dataset(ws, dataset, stages=spec.stages(cfg))
        dev = torch.device(device)
        model = build_model(name, cfg, data).to(dev)
        item_meta, graph = _extras(ws, dataset, data)
        return cls(model, data.items, cls._builder(model, data, dev), f"{name} (baseline on {dataset})", dev,
                   {"model": name, "dataset": dataset, "runtime": "torch"}, item_meta=item_meta, graph=graph)

    @classmethod
    def for_target(cls, ws: Workspace, target: str | Target, device: str = "cpu", runtime: str = "torch",
                   search: str = "exact") -> "Recommender":
        """A run id, or `baseline:NAME@DATASET` (a baseline with its default parameters)."""
        t = target if isinstance(target, Target) else Target.parse(target)
        if not t.is_baseline:
            return cls.load(ws.existing_run(t.run_id), device=device, runtime=runtime, search=search)
        if runtime != "torch":
            raise InputError(f"{t}: baselines run in the torch runtime only (ONNX export is for GNN runs)")
        rec = cls.for_baseline(ws, t.dataset, t.baseline, device=device)
        rec.use_search(search)
        return rec

    @staticmethod
    def _builder(model, data, dev: torch.device) -> BatchBuilder:
        """Batches for typed sessions (no stored split): an empty store, the model's graph mode."""
        empty = SessionStore(Sessions.empty(np.int32), dev)
        return BatchBuilder(empty, data.n_items, model.graph_mode, data.graph)

    # ---- search ----------------------------------------------------------------------------------
    def use_search(self, kind: str, cache=None, signature: str = "", target: float = 0.99) -> None:
        """exact | pq | auto (pq from `PQ_MIN_ITEMS` items; GNN runs only: other models score
        every item). A PQ index is calibrated on held-out sessions (`calibrate_search`) and
        cached at `cache` (a path) for the same `signature` (the checkpoint it was built from)."""
        if kind not in SEARCHES:
            raise InputError(f"search {kind!r}; expected one of {', '.join(SEARCHES)}")
        if kind == "auto":
            kind = "pq" if self.encoder is not None and self.items.n_items >= PQ_MIN_ITEMS else "exact"
        if kind == "exact":
            self.search = None
        else:
            if self.encoder is None:
                raise InputError(f"{self.source}: approximate search needs a GNN (item vectors); "
                                 f"use --search exact")
            self.search = PQSearch.load(cache, signature) if cache is not None else None
            if self.search is None:
                self.search = PQSearch.build(self.table.cpu().numpy(), signature=signature)
                self.calibrate_search(target=target)
                if cache is not None:
                    self.search.save(cache)
        self.meta["search"] = self.search_info()

    def search_info(self) -> dict:
        if self.search is None:
            return {"kind": "exact"}
        return {"kind": "pq", **asdict(self.search.info)}

    def _calibration_prefixes(self, n: int, seed: int = 0) -> list[list[int]]:
        """Up to `n` prefixes of held-out sessions (a seeded sample of every next-item prefix)."""
        if self.held_out is None or len(self.held_out) == 0:
            raise InputError("no held-out sessions to calibrate or measure the search on")
        ex = make_examples(self.held_out, "prefixes")
        ex = ex[np.random.default_rng(seed).permutation(len(ex))[:n]]
        items, offsets = self.held_out.items, self.held_out.offsets
        return [[int(v) for v in items[offsets[s]:offsets[s] + p] if v > 0] for s, p in ex]

    def agreement(self, k: int = 10, n: int = 1000, prefixes: list[list[int]] | None = None) -> float:
        """Share of held-out prefixes whose top-k set from the current search equals exact search's."""
        prefixes = [p for p in (prefixes or self._calibration_prefixes(n)) if p]
        same = []
        for i in range(0, len(prefixes), 256):
            batch = self.builder.from_prefixes(prefixes[i:i + 256])
            with torch.inference_mode():
                parts = self.encoder.encode(batch)
                exact = self._top_exact(batch, parts, k, exclude=False)[0]
                approx = self._top_search(batch, parts, k, exclude=False)[0]
            same.append((exact.sort(1).values == approx.sort(1).values).all(1))
        return float(torch.cat(same).float().mean()) if same else 1.0

    def calibrate_search(self, target: float = 0.99, k: int = 10, n: int = 1000) -> None:
        """The smallest candidate count (64 doubled) whose top-k agrees with exact search on
        `target` of `n` held-out prefixes (every item: exact)."""
        prefixes = self._calibration_prefixes(n)
        self.search.info.k = k             # the count is calibrated for (and scaled from) this k
        agree = self.search.calibrate(lambda: self.agreement(k, prefixes=prefixes), target)
        self.search.info.agreement, self.search.info.sessions = agree, len(prefixes)

    # ---- queries -------------------------------------------------------------------------------
    def popular(self, n: int = 50) -> list[tuple[int, int]]:
        idx = self._pop_order[:n]
        return list(zip(self.items.decode(idx).tolist(), self._counts[idx].tolist()))

    def describe(self, raw_ids) -> list[dict] | None:
        """What each item is (name, category, path, price, available; {} for an item without
        metadata); None when the dataset has no item metadata."""
        return self.item_meta.describe(raw_ids) if self.item_meta is not None else None

    def recommend(self, raw_ids: list[int], k: int = 10, exclude_session_items: bool = False,
                  rules: Rules | None = None, explain: bool = False) -> Recommendation:
        return self.recommend_many([raw_ids], k, exclude_session_items, rules, explain)[0]

    @torch.inference_mode()
    def recommend_many(self, sessions: list[list[int]], k: int = 10, exclude_session_items: bool = False,
                       rules: Rules | None = None, explain: bool = False) -> list[Recommendation]:
        """Top-k for each session (raw ids, oldest first), scored in one batch; `rules` restrict and
        boost the catalogue before the top-k is taken; `explain` adds each item's evidence."""
        t0 = time.perf_counter()
        if k < 1:
            raise InputError("k must be >= 1")
        k = min(k, self.items.n_items)
        rules = rules if rules is not None and not rules.empty else None
        mask = self._mask(rules) if rules is not None else None
        flat = np.fromiter((r for s in sessions for r in s), dtype=np.int64)
        idx_flat = self.items.encode(flat) if len(flat) else np.zeros(0, np.int32)
        if self.encoder is not None and self.encoder is not self.model and self.n_table > self.n_trained + 1:
            # an exported encoder knows the trained items only: new items are candidates, not inputs
            idx_flat = np.where(idx_flat > self.n_trained, 0, idx_flat)
        bounds = np.cumsum([0] + [len(s) for s in sessions])
        idx = [idx_flat[bounds[i]:bounds[i + 1]] for i in range(len(sessions))]
        scored = [i for i, x in enumerate(idx) if (x > 0).any()]
        top_by, why_by = {}, {}
        if scored:
            batch = self.builder.from_prefixes([idx[i][idx[i] > 0].tolist() for i in scored])
            top, vals, explained = self._top(batch, k, exclude_session_items, mask, explain)
            top_by = dict(zip(scored, zip(top.cpu().numpy(), vals.cpu().numpy())))
            if explain:
                from engine.inference.explain import explain_batch
                why_by = dict(zip(scored, explain_batch(self, batch, top, vals, explained)))
        out = []
        for i, raw in enumerate(sessions):
            known_mask = idx[i] > 0
            session_idx = set(idx[i][known_mask].tolist())
            why = None
            if i in top_by:
                top, vals = top_by[i]
                keep = np.isfinite(vals)                # fewer than k items left after exclusion
                top, scores = top[keep], vals[keep].tolist()
                fallback, source = False, self.source
                why = [w for w, ok in zip(why_by[i], keep) if ok] if explain else None
            else:
                order = self._pop_order if mask is None else self._pop_order[mask[0].eligible[self._pop_order]]
                top = order[:k]
                scores = self._counts[top].astype(float).tolist()
                fallback, source = True, "popularity fallback (no known item in the session)"
                why = [{"item": int(r), "popularity": int(c)} for r, c in
                       zip(self.items.decode(top).tolist(), self._counts[top].tolist())] if explain else None
            items = self.items.decode(top).tolist()
            out.append(Recommendation(
                items=items, scores=[float(x) for x in scores],
                popularity=self._counts[top].tolist(), in_session=[int(t) in session_idx for t in top],
                unknown=[r for r, ok in zip(raw, known_mask) if not ok],
                known=[r for r, ok in zip(raw, known_mask) if ok], fallback=fallback, source=source,
                info=self.describe(items), explanations=why))
        seconds = time.perf_counter() - t0
        for r in out:
            r.seconds = seconds
        return out

    # ---- rules -------------------------------------------------------------------------------
    def _mask(self, rules: Rules) -> tuple[RuleMask, torch.Tensor, torch.Tensor]:
        """The rules' mask over the catalogue, with its eligible / bias tensors on the device; the
        last few distinct rules are kept (a shop's requests repeat a handful of rule sets)."""
        hit = self._masks.get(rules)
        if hit is None:
            m = rule_mask(rules, self.items.encode, self.n_table, self._paths, self._available)
            hit = (m, torch.as_tensor(m.eligible, device=self.device), torch.as_tensor(m.bias, device=self.device))
            if len(self._masks) >= 32:
                self._masks.pop(next(iter(self._masks)))
            self._masks[rules] = hit
        return hit

    @staticmethod
    def _apply(s: torch.Tensor, mask) -> torch.Tensor:
        """Scores over the whole catalogue with the rules applied: ineligible -inf, boosted lifted."""
        if mask is None:
            return s
        _, eligible, bias = mask
        return torch.where(eligible[None, :], s + bias[None, :], float("-inf"))

    def _top(self, batch: Batch, k: int, exclude: bool, mask=None,
             explain: bool = False) -> tuple[torch.Tensor, torch.Tensor, tuple | None]:
        """(item indices, scores) [B, k], best first (-inf scores where nothing was left), and with
        `explain` and the eager GNN as the encoder, what the explanation needs from the same pass."""
        if self.encoder is None:
            s = self.model.score(batch).float()
            if exclude:
                s.scatter_(1, batch.items, float("-inf"))
            vals, top = torch.topk(self._apply(s, mask), k)
            return top, vals, None
        explained = None
        if explain and self.encoder is self.model:
            reps, cells, state = self.model.encode_explained(batch)
            parts, explained = (reps, cells), (reps, cells, state)
        else:
            parts = self.encoder.encode(batch)
        if self.search is None:
            return (*self._top_exact(batch, parts, k, exclude, mask), explained)
        return (*self._top_search(batch, parts, k, exclude, mask), explained)

    def _top_exact(self, batch: Batch, parts, k: int, exclude: bool, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        s = session_scores(*parts, batch.items, self.table)
        if exclude:
            s.scatter_(1, batch.items, float("-inf"))
        vals, top = torch.topk(self._apply(s, mask), k)
        return top, vals

    def _top_search(self, batch: Batch, parts, k: int, exclude: bool, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """PQ candidates scored exactly. With rules: a small eligible set is scored exactly as a
        whole; otherwise the scan asks for enough candidates that the calibrated count of them is
        eligible (more, doubling, while fewer are), and the boosted items are added (all of them
        when few, else their own share of candidates)."""
        reps, _ = parts
        L = batch.items.shape[1]
        need = self.search.candidates_for(k, L)
        if mask is not None:
            m = mask[0]
            if m.n_eligible <= max(EXACT_SUBSET, need):
                cand = torch.as_tensor(np.flatnonzero(m.eligible), device=reps.device)
                return self._top_shared(batch, parts, k, exclude, mask, cand)
            found = self._eligible_candidates(reps, need, m.eligible, m.n_eligible)
            if len(m.boosted):
                extra = (torch.as_tensor(m.boosted, device=reps.device)[None, :].expand(len(found), -1)
                         if len(m.boosted) <= EXACT_SUBSET else
                         self._eligible_candidates(reps, need, np.isin(np.arange(self.n_table), m.boosted),
                                                   len(m.boosted)))
                found = torch.cat([found, extra], 1)
        else:
            found = torch.as_tensor(self.search.search(reps.cpu().numpy(), need), device=reps.device)
        # the session's items are always candidates: their repeat logit can lift them into the top-k;
        # the index returns distinct items, so a duplicate is a session item it also found (or a
        # repeated session item): its session-side copy is masked
        items = batch.items
        if mask is not None:     # a found item may repeat (boosted and found too): keep one of them
            srt, order = torch.sort(found, 1)
            again = torch.zeros_like(srt, dtype=torch.bool)
            again[:, 1:] = srt[:, 1:] == srt[:, :-1]
            found = torch.zeros_like(found).scatter_(1, order, srt.masked_fill(again, 0))
        dup = (items[:, :, None] == found[:, None, :]).any(-1)                        # [B, L]
        if L > 1:           # cell j + 1 against the cells before it
            dup[:, 1:] |= torch.tril(items[:, 1:, None] == items[:, None, :-1]).any(-1)
        cand = torch.cat([found, items.masked_fill(dup, 0)], 1)
        s = candidate_scores(*parts, items, self.table, cand)
        if exclude:
            s = s.masked_fill((cand[:, :, None] == batch.items[:, None, :]).any(-1), float("-inf"))
        if mask is not None:
            _, eligible, bias = mask
            s = torch.where(eligible[cand], s + bias[cand], float("-inf"))
        vals, pos = torch.topk(s, min(k, s.shape[1]))
        return cand.gather(1, pos), vals

    def _eligible_candidates(self, reps: torch.Tensor, need: int, eligible: np.ndarray,
                             n_eligible: int) -> torch.Tensor:
        """long [B, n]: PQ candidates, enough that at least `need` of each row are `eligible` (the
        ineligible ones stay: the rescoring sets them to -inf), every item at the most."""
        total = self.items.n_items
        n = min(total, int(np.ceil(need * total / max(n_eligible, 1))) + 16)
        q = reps.cpu().numpy()
        while True:
            found = self.search.search(q, n)
            if n >= total or (eligible[found].sum(1) >= need).all():
                return torch.as_tensor(found, device=reps.device)
            n = min(total, 2 * n)

    def _top_shared(self, batch: Batch, parts, k: int, exclude: bool, mask, cand: torch.Tensor):
        """Exact scores of one candidate set shared by every row (a small eligible set): the dot
        products plus the repeat logits of the session items among them."""
        reps, cells = parts
        C = len(cand)
        # one spare column: the cells of items outside the set write there, then it is dropped
        s = torch.cat([reps.float() @ self.table[cand].T, reps.new_zeros(reps.shape[0], 1)], 1)  # [B, C+1]
        col = torch.full((self.n_table,), C, dtype=torch.long, device=reps.device)
        col[cand] = torch.arange(C, device=reps.device)
        at = torch.where(batch.mask, col[batch.items], C)                      # [B, L]
        # cells of one item carry the same repeat logit: writing it once per cell adds it once
        s.scatter_(1, at, s.gather(1, at) + cells * batch.mask)
        if exclude:
            s.scatter_(1, at, float("-inf"))
        _, _, bias = mask
        s = s[:, :C] + bias[cand][None, :]
        vals, pos = torch.topk(s, min(k, C))
        return cand[pos], vals


def _extras(ws: Workspace, dataset: str, data) -> tuple[ItemMeta | None, CoocGraph | None]:
    """The dataset's item metadata (as built now) and train graph, when it has them: what items are,
    the rules and the explanations read them."""
    ds = Dataset.load(ws, dataset)
    graph = data.graph
    if graph is None and ds.paths.graph.exists():
        graph = CoocGraph.load(ds.paths.graph)
    return load_item_meta(ds), graph
