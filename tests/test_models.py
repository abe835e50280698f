"""Session GNNs: score shapes and masking, gradients, PE handling, graph modes, overfitting, determinism."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine.core.errors import InputError
from engine.data.batches import BatchBuilder, SessionStore, make_examples
from engine.data.graph import build_cooc_graph
from engine.data.sessions import Sessions
from engine.models.base import Scorer
from engine.models.gnn import SessionGNN
from engine.models.readout import READOUTS
from engine.models.registry import GNNS, SPECS, build_model
from engine.train.losses import compute_loss

V = 20


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_sessions(lists):
    return Sessions.from_lists(lists, np.int32)


def tiny_data(seed: int = 0, n_sessions: int = 30):
    rng = np.random.default_rng(seed)
    train = make_sessions([rng.integers(1, V + 1, size=int(rng.integers(2, 6))).tolist()
                           for _ in range(n_sessions)])
    pe = rng.standard_normal((V + 1, 4)).astype(np.float32)
    pe[0] = 0
    graph, _ = build_cooc_graph(train, V, window=3)
    return SimpleNamespace(n_items=V, pe=pe, train=train, graph=graph)


def build(name: str, data, **over) -> SessionGNN:
    return build_model(name, SPECS[name].resolve({"hidden": 16, "dropout": 0.0, **over}, "cuda"), data)


def batches(model: SessionGNN, data):
    builder = BatchBuilder(SessionStore(data.train), V, model.graph_mode, cooc=data.graph)
    return builder, builder(make_examples(data.train, "prefixes"))


def check_scores(scores: torch.Tensor, n_rows: int) -> None:
    assert scores.shape == (n_rows, V + 1) and scores.dtype == torch.float32
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("name", GNNS)
def test_score_shapes_and_padding(name, readout):
    data = tiny_data()
    model = build(name, data, readout=readout).eval()
    assert isinstance(model, Scorer)
    builder, batch = batches(model, data)
    with torch.no_grad():
        check_scores(model.score(batch), batch.size)
        check_scores(model.score(builder.from_prefixes([[], [3, 3, 5], [7]])), 3)  # empty prefix
        check_scores(model.score(builder.from_prefixes([[]])), 1)                  # no nodes at all
    model.train()
    loss = compute_loss(model, builder.from_prefixes([[], [2, 4]]), "ce")          # targets 0: guarded
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", GNNS)
def test_gradients_reach_embeddings_convs_and_pe(name):
    data = tiny_data()
    model = build(name, data)
    _, batch = batches(model, data)
    compute_loss(model, batch, "ce").backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.emb.weight.grad.abs().sum() > 0 and not model.emb.weight.grad[0].any()
    assert model.pe_proj.weight.grad.abs().sum() > 0
    for block in model.blocks:
        grads = [p.grad for p in block.conv.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0

    no_pe = build(name, SimpleNamespace(**{**vars(data), "pe": None}), use_pe=False)
    assert not any(n.startswith("pe_proj") for n, _ in no_pe.named_parameters()) and "pe" not in dict(no_pe.named_buffers())
    compute_loss(no_pe, batch, "ce").backward()
    assert no_pe.emb.weight.grad.abs().sum() > 0


def test_use_pe_needs_pe_and_shapes_are_checked():
    data = SimpleNamespace(**{**vars(tiny_data()), "pe": None})
    with pytest.raises(InputError, match="PE"):
        build("graph_transformer", data)
    with pytest.raises(InputError, match="shape"):
        build("graph_transformer", SimpleNamespace(n_items=V, pe=np.zeros((V, 4), np.float32)))
    with pytest.raises(InputError, match="divisible"):
        build("gat", tiny_data(), hidden=15, heads=2)


def test_pe_signs_flip_in_training_only():
    data = tiny_data()
    model = build("graph_transformer", data)
    _, batch = batches(model, data)
    torch.manual_seed(0)
    a, b = model.node_inputs(batch), model.node_inputs(batch)
    assert not torch.equal(a, b)
    model.eval()
    assert torch.equal(model.node_inputs(batch), model.node_inputs(batch))
    # a flipped column is a sign change of that column's projection, nothing else
    x = batch.x[:1]
    flipped = model.emb(x) + model.pe_proj(-model.pe[x])
    assert torch.allclose(2 * model.emb(x) - flipped, model.node_inputs(batch)[:1], atol=1e-6)


@pytest.mark.parametrize("name", ["graphsage", "graph_transformer"])
def test_cooc_graph_mode(name):
    data = tiny_data()
    model = build(name, data, graph_mode="cooc").eval()
    builder, batch = batches(model, data)
    assert builder.graph_mode == "cooc" and batch.edge_index.shape[1] > 0
    with torch.no_grad():
        check_scores(model.score(batch), batch.size)
        check_scores(model.score(builder.from_prefixes([[], [1]])), 2)


def recall_at(scores: torch.Tensor, targets: torch.Tensor, k: int = 10) -> float:
    rank = 1 + (scores > scores.gather(1, targets[:, None])).sum(1)
    return float((rank <= k).float().mean())


@pytest.mark.parametrize("name", GNNS)
def test_overfits_tiny_dataset(name):
    torch.manual_seed(0)
    data = tiny_data()
    model = build(name, data, hidden=32)
    _, batch = batches(model, data)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        compute_loss(model, batch, "ce").backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert recall_at(model.score(batch), batch.targets) == 1.0


def test_deterministic_on_cpu():
    data = tiny_data()

    def run() -> torch.Tensor:
        torch.manual_seed(123)
        model = build("gat", data, dropout=0.1)
        _, batch = batches(model, data)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for loss in ("ce", "sampled", "bpr"):
            opt.zero_grad()
            compute_loss(model, batch, loss, negatives=5).backward()
            opt.step()
        with torch.no_grad():
            return model.eval().score(batch)

    assert torch.equal(run(), run())


def test_bf16_autocast_on_cpu():
    data = tiny_data()
    model = build("graph_transformer_ffn", data)
    builder, batch = batches(model, data)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for loss in ("ce", "sampled", "bpr"):
            out = compute_loss(model, batch, loss, negatives=5)
            assert torch.isfinite(out)
            out.backward()
        scores = model.eval().score(builder.from_prefixes([[], [1, 2]]))
    check_scores(scores, 2)                            # float32 even under autocast


def test_specs_build_their_config_with_the_cpu_preset():
    data = tiny_data()
    for name in GNNS:
        spec = SPECS[name]
        for device, hidden in (("cpu", 128), ("cuda", 256)):
            cfg = spec.resolve(None, device)
            model = build_model(name, cfg, data)
            assert model.graph_mode == "transitions" and model.hidden == hidden
            assert model.repeat is True                # one default for repeat (it was two)
    assert SPECS["graph_transformer_ffn"].resolve().ffn_mult == 2
    assert not hasattr(SPECS["graphsage"].resolve(), "heads")   # SAGE has no attention heads


def test_repeat_scorer_sparse_and_candidate_forms_agree_with_hand_values():
    data = tiny_data()
    model = build("graph_transformer", data).eval()
    builder, _ = batches(model, data)
    batch = builder.from_prefixes([[3, 5, 3], [7]])
    with torch.no_grad():
        reps = model(batch)
        V1 = data.n_items + 1
        dense = model.add_repeat_logits(batch, reps, torch.zeros(2, V1))     # [2, V+1]
        # the [B, V] layout of the training loss (column c = item c + 1) adds the same values
        shifted = model.add_repeat_logits(batch, reps, torch.zeros(2, V1 - 1), first_item=1)
        cand = torch.tensor([3, 5, 7, 9])
        shared = model.repeat_logits(batch, reps, cand)                # [2, 4]
        per_row = model.repeat_logits(batch, reps, cand.expand(2, 4))  # [2, 4]
        gate = torch.nn.functional.softplus(model.repeat_gate(reps / model.scale))
    assert torch.allclose(dense[:, cand], shared) and torch.allclose(shared, per_row)
    assert torch.allclose(shifted, dense[:, 1:])
    # only session items get a repeat logit
    others = torch.ones(V1, dtype=torch.bool)
    others[[3, 5, 7]] = False
    assert dense[:, others].abs().max() == 0
    # recency weights start at exp(0) = 1: item 3 sits at 2 positions, 5 at 1, 9 nowhere
    expect = torch.tensor([[np.log(3), np.log(2), 0.0, 0.0], [0.0, 0.0, np.log(2), 0.0]], dtype=torch.float32) * gate
    assert torch.allclose(shared, expect, atol=1e-6)
    off = build("graph_transformer", data, repeat=False)
    assert off.repeat_logits(batch, reps, cand) is None
    assert torch.equal(off.add_repeat_logits(batch, reps, torch.zeros(2, V1)), torch.zeros(2, V1))
    assert not any(n.startswith("recency_w") or n.startswith("repeat_gate") for n, _ in off.named_parameters())


def test_scores_from_the_encoders_parts_equal_the_models_scores():
    """The serving path (encode, then score the whole table or some candidates) gives score()'s
    values; hand values for the repeat cells: 3 sits at 2 positions (log 3), 5 at 1 (log 2)."""
    from engine.models.gnn import candidate_scores, session_scores
    data = tiny_data()
    for repeat in (True, False):
        model = build("graph_transformer", data, repeat=repeat).eval()
        builder, _ = batches(model, data)
        batch = builder.from_prefixes([[3, 5, 3], [7], []])
        with torch.no_grad():
            reps, cells = model.encode(batch)
            full = session_scores(reps, cells, batch.items, model.item_table())
            cand = torch.tensor([[3, 9, 5, 0], [7, 1, 2, 3], [4, 5, 6, 7]])
            some = candidate_scores(reps, cells, batch.items, model.item_table(), cand)
            expect = model.score(batch)
            gate = torch.nn.functional.softplus(model.repeat_gate(reps / model.scale)) if repeat else None
        assert torch.allclose(full, expect, atol=1e-5) and torch.isinf(full[:, 0]).all()
        assert torch.allclose(some[:, :3], expect.gather(1, cand)[:, :3], atol=1e-5)
        assert torch.isinf(some[0, 3])                           # padding candidate
        if repeat:
            hand = torch.tensor([np.log(3), np.log(2), np.log(3)], dtype=torch.float32) * gate[0]
            assert torch.allclose(cells[0], hand, atol=1e-6)
            assert torch.allclose(cells[1, :1], float(np.log(2)) * gate[1], atol=1e-6)
        else:
            assert cells.abs().max() == 0


def test_cached_item_table_follows_training_and_loading():
    model = build("graph_transformer", tiny_data())
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)   # fused: no tensor version bump
    model.eval()
    with torch.no_grad():
        before = model.item_table().clone()
    model.train()
    (model.emb.weight ** 2).sum().backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        after = model.item_table()
        assert not torch.equal(before, after)
        assert torch.equal(after, model.item_vectors(None))
        other = build("graph_transformer", tiny_data())
        other.load_state_dict(model.state_dict())
        other.eval()
        assert torch.equal(other.item_table(), after)
        model.load_state_dict(build("graph_transformer", tiny_data()).state_dict())
        assert torch.equal(model.item_table(), model.item_vectors(None))


def test_sparse_repeat_logits_match_a_dense_reference_with_gradients():
    data = tiny_data()
    model = build("graph_transformer", data).train()
    with torch.no_grad():
        model.recency_w.copy_(torch.linspace(-1, 1, model.recency_w.numel()))
    builder, _ = batches(model, data)
    batch = builder.from_prefixes([[3, 5, 3, 3], [7], [2, 2, 9]])
    reps = torch.randn(3, model.hidden, requires_grad=True)
    V1 = data.n_items + 1
    probe = torch.randn(3, V1)

    def grads(out):
        model.zero_grad()
        reps.grad = None
        (out * probe).sum().backward()
        return model.recency_w.grad.clone(), reps.grad.clone()

    sparse = model.add_repeat_logits(batch, reps, torch.zeros(3, V1))
    g_sparse = grads(sparse)
    w, gate = model._repeat_parts(batch, reps)
    dense = gate * torch.log1p(torch.zeros(3, V1).scatter_add(1, batch.items, w))
    g_dense = grads(dense)
    assert torch.allclose(sparse, dense, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g_sparse, g_dense))


def test_reversed_position_embeddings_enter_the_attention_weights_only():
    from engine.models.readout import MAX_POSITIONS, Readout
    torch.manual_seed(0)
    d = 4
    plain, pos = Readout("attention", d), Readout("attention", d, positions=True)
    pos.load_state_dict(plain.state_dict(), strict=False)       # same weights, plus positions
    assert pos.pos.weight.shape == (MAX_POSITIONS, d)
    h = torch.randn(3, d)
    alias = torch.tensor([[0, 1, 2], [2, 0, 0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    h_last = h[[2, 2]]
    with torch.no_grad():
        pos.pos.weight.zero_()                                   # zero positions: the plain readout
        assert torch.allclose(pos(h, alias, mask, h_last), plain(h, alias, mask, h_last))
        # reversed: a row's last position reads embedding 0, so a one-item prefix only ever sees it
        pos.pos.weight[1:].normal_()
        one = pos(h[:, :], alias[1:], mask[1:], h_last[1:])
        assert torch.allclose(one, plain(h, alias[1:], mask[1:], h_last[1:]))
        # with positions the same node set in another order gives another session vector
        rev_alias = torch.tensor([[2, 1, 0]])
        a = pos(h, alias[:1], mask[:1], h[[2]])
        b = pos(h, rev_alias, mask[:1], h[[2]])
        assert not torch.allclose(a, b)
        assert torch.allclose(plain(h, alias[:1], mask[:1], h[[2]]), plain(h, rev_alias, mask[:1], h[[2]]))


@pytest.mark.parametrize("kind", ["attention", "mean"])
def test_packed_readout_equals_the_padded_formula(kind):
    from engine.models.readout import Readout
    torch.manual_seed(1)
    d = 6
    r = Readout(kind, d)
    h = torch.randn(5, d)
    alias = torch.tensor([[0, 1, 0, 2], [3, 0, 0, 0], [4, 4, 0, 0], [0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    h_last = torch.where(mask.any(1, keepdim=True), h[alias.gather(1, (mask.sum(1, keepdim=True) - 1).clamp(min=0))[:, 0]], 0.0)
    h_pos, m = h[alias], mask.unsqueeze(-1).float()                      # the padded [B, L, d] grid
    if kind == "mean":
        want = (h_pos * m).sum(1) / m.sum(1).clamp(min=1)
    else:
        alpha = r.q(torch.sigmoid(r.w1(h_last).unsqueeze(1) + r.w2(h_pos)))
        want = r.w3(torch.cat([(alpha * m * h_pos).sum(1), h_last], -1))
    assert torch.allclose(r(h, alias, mask, h_last), want, atol=1e-6)


def test_global_graph_context_attends_over_the_neighbour_table_and_survives_a_checkpoint():
    data = tiny_data()
    model = build("graph_transformer", data, global_k=3).eval()
    nbr, w = data.graph.neighbor_table(3)
    assert torch.equal(model.g_nbr, torch.as_tensor(nbr))
    x = torch.tensor([1, 2])
    e = model.emb(x)
    with torch.no_grad():
        got = model.global_context(x, e)
        # by hand for item 1: softmax over its neighbours of <e_1, e_j>/sqrt(d) + log w_j
        j = [n for n, ww in zip(nbr[1], w[1]) if ww > 0]
        s = torch.stack([e[0] @ model.emb.weight[n] / 4.0 + float(np.log(w[1][k])) for k, n in enumerate(j)])
        want = (torch.softmax(s, 0)[:, None] * model.emb.weight[j]).sum(0)
    assert torch.allclose(got[0], want, atol=1e-6)
    builder, batch = batches(model, data)
    check_scores(model.score(batch), batch.size)
    # a checkpoint's stand-in has no graph: the table comes back with the weights
    from types import SimpleNamespace
    stub = SimpleNamespace(n_items=V, pe=data.pe, graph=None)
    again = build("graph_transformer", stub, global_k=3)
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval().score(batch), model.score(batch))


def test_switch_scores_session_items_by_z_plus_their_log_softmax_among_the_session():
    """With the switch, dot + cell value of a session item = z(s) + log softmax over the session's
    distinct items of (dot + repeat logit); other items keep their dot product; every scoring path
    (score, the encoder's parts over the table or some candidates, the training layouts) agrees."""
    from engine.models.gnn import candidate_scores, session_scores
    data = tiny_data()
    model = build("graph_transformer", data, switch=True).eval()
    builder, _ = batches(model, data)
    batch = builder.from_prefixes([[3, 5, 3], [7], []])
    with torch.no_grad():
        reps, cells = model.encode(batch)
        table = model.item_table()
        dot = reps @ table.T
        full = model.score(batch)
        # by hand, row 0: session items 3 and 5; repeat logits gate * log(1 + recency weights)
        gate = torch.nn.functional.softplus(model.repeat_gate(reps / model.scale))[0, 0]
        rep = {3: gate * np.log(3), 5: gate * np.log(2)}
        x = torch.stack([dot[0, 3] + rep[3], dot[0, 5] + rep[5]])
        z = model.switch_gate(reps[:1] / model.scale)[0, 0]
        for i, item in enumerate((3, 5)):
            assert torch.allclose(full[0, item], z + x[i] - torch.logsumexp(x, 0), atol=1e-5)
        others = [i for i in range(1, data.n_items + 1) if i not in (3, 5)]
        assert torch.allclose(full[0, others], dot[0, others], atol=1e-5)
        # a one-item session: that item scores z exactly (its log-softmax is 0); an empty one: dots
        z1 = model.switch_gate(reps[1:2] / model.scale)[0, 0]
        assert torch.allclose(full[1, 7], z1, atol=1e-5)
        assert torch.allclose(full[2, 1:], dot[2, 1:], atol=1e-5)
        assert torch.allclose(session_scores(reps, cells, batch.items, table), full, atol=1e-5)
        cand = torch.tensor([[3, 9, 5], [7, 1, 2], [4, 5, 6]])
        assert torch.allclose(candidate_scores(reps, cells, batch.items, table, cand), full.gather(1, cand), atol=1e-5)
        V1 = data.n_items + 1
        added = model.add_repeat_logits(batch, reps, dot.clone())
        shifted = model.add_repeat_logits(batch, reps, dot[:, 1:].clone(), first_item=1)
        per_row = model.repeat_logits(batch, reps, cand)
        assert torch.allclose(added[:, 1:], full[:, 1:], atol=1e-5) and torch.allclose(shifted, added[:, 1:])
        assert torch.allclose(dot.gather(1, cand) + per_row, full.gather(1, cand), atol=1e-5)
        assert added.shape == (3, V1)


def test_switch_learns_to_put_repeats_first_on_repeat_only_data():
    """Sessions whose next item always repeats one of theirs: trained with the switch, z rises and
    every repeat target is ranked within its session's items."""
    rng = np.random.default_rng(0)
    lists = []
    for _ in range(60):
        s = rng.choice(np.arange(1, V + 1), size=3, replace=False).tolist()
        lists.append(s + [s[int(rng.integers(0, 3))]])
    data = SimpleNamespace(n_items=V, pe=None, train=make_sessions(lists), graph=None)
    model = build("graph_transformer", data, switch=True, use_pe=False)
    builder, _ = batches(model, data)
    ex = torch.as_tensor(make_examples(data.train, "prefixes"))
    ex = ex[ex[:, 1] == 3]                                   # the repeat targets
    opt = torch.optim.AdamW(model.parameters(), lr=0.02)
    z0 = None
    for _ in range(60):
        batch = builder(ex)
        loss = compute_loss(model, batch, "ce")
        if z0 is None:
            with torch.no_grad():
                z0 = model.switch_gate(model(batch) / model.scale).mean().item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        batch = builder(ex)
        scores = model.score(batch)
        rank = 1 + (scores > scores.gather(1, batch.targets[:, None])).sum(1)
        z1 = model.switch_gate(model(batch) / model.scale).mean().item()
    assert z1 > z0 and int(rank.max()) <= 3


def test_contrastive_loss_adds_a_second_view_and_a_hand_checked_info_nce():
    from engine.train.losses import info_nce
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0]])                # same directions: cos 1 on the diagonal
    # logits [[1/t, 0], [0, 1/t]]: each row's CE is log(1 + e^(-1/t)), both directions alike
    t = 0.5
    assert torch.allclose(info_nce(a, b, t, torch.tensor([True, True])), torch.tensor(np.log1p(np.exp(-2.0)),
                                                                                        dtype=torch.float32))
    data = tiny_data()
    torch.manual_seed(0)
    plain = build("graph_transformer", data, dropout=0.3)
    torch.manual_seed(0)
    cl = build("graph_transformer", data, dropout=0.3, contrastive=0.5)
    builder, _ = batches(plain, data)
    batch = builder(torch.as_tensor(make_examples(data.train, "prefixes"))[:16])
    torch.manual_seed(1)
    base = compute_loss(plain, batch, "ce")
    torch.manual_seed(1)
    both = compute_loss(cl, batch, "ce")
    assert both.item() > base.item()                          # the same first pass, plus 0.5 * InfoNCE > 0
    both.backward()
    assert cl.emb.weight.grad is not None and cl.emb.weight.grad.abs().sum() > 0


def test_highway_gate_mixes_node_inputs_and_message_passing_by_hand():
    data = tiny_data()
    model = build("graph_transformer", data, highway=True, use_pe=False).eval()
    builder, _ = batches(model, data)
    batch = builder.from_prefixes([[3, 5, 3], [7]])
    with torch.no_grad():
        # a gate of 1 (large bias) passes the inputs through: the session vector of the plain
        # embeddings, as if there were no layers
        model.highway.weight.zero_()
        model.highway.bias.fill_(50.0)
        through = model(batch)
        flat = build("graph_transformer", data, layers=0, use_pe=False).eval()
        flat.load_state_dict({k: v for k, v in model.state_dict().items() if k in flat.state_dict()}, strict=False)
        assert torch.allclose(through, flat(batch), atol=1e-5)
        model.highway.bias.fill_(-50.0)             # a gate of 0: the message-passing output alone
        plain = build("graph_transformer", data, use_pe=False).eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("highway")})
        assert torch.allclose(model(batch), plain(batch), atol=1e-5)
