"""`--loss auto`: the full-softmax / sampled decision from hand-computed logits sizes."""

from __future__ import annotations

from engine.core.schema import Loss
from engine.train.loss_choice import LOGITS_FACTOR, choose_loss, full_softmax_bytes, memory_budget, resolve_loss


def test_full_softmax_bytes_by_hand():
    # 512 x 1,000 items x 4 bytes x 4 tensors = 8,192,000 bytes
    assert LOGITS_FACTOR == 4
    assert full_softmax_bytes(512, 1000) == 8_192_000
    # xl-like: 1,024 x 56,000 x 16 = 917,504,000 bytes (~0.85 GiB)
    assert full_softmax_bytes(1024, 56_000) == 917_504_000


def test_choice_at_the_boundary():
    need = 512 * 1000 * 16
    assert choose_loss(512, 1000, need).loss == "ce"               # exactly fits
    assert choose_loss(512, 1000, need - 1).loss == "sampled"      # one byte short
    # RetailRocket-scale catalogue, 8 GiB budget: 1,024 x 466,000 x 16 = 7.1 GiB fits
    assert choose_loss(1024, 466_000, 8 * 2**30).loss == "ce"
    # ... a batch of 4,096 (28.4 GiB) does not
    c = choose_loss(4096, 466_000, 8 * 2**30, device="cuda:0")
    assert (c.loss, c.logits_bytes, c.budget_bytes) == ("sampled", 4096 * 466_000 * 16, 8 * 2**30)
    assert "sampled" in c.message and "do not fit" in c.message and "cuda:0" in c.message
    assert c.to_dict()["loss"] == "sampled"


def test_explicit_loss_is_kept():
    for loss in ("ce", "sampled", "bpr"):
        assert resolve_loss(loss, 10**6, 10**7, "cpu") is None
    auto = resolve_loss(Loss.AUTO.value, 8, 10, "cpu")      # tiny logits: always fit on CPU
    assert auto is not None and auto.loss == "ce" and auto.budget_bytes == memory_budget("cpu")


def test_cpu_budget_is_a_share_of_available_ram(monkeypatch):
    import engine.train.loss_choice as lc
    monkeypatch.setattr(lc, "_available_ram", lambda: 16 * 2**30)
    assert memory_budget("cpu") == 4 * 2**30
    assert resolve_loss("auto", 1024, 300_000, "cpu").loss == "sampled"   # 18.3 GiB > 4 GiB
    assert resolve_loss("auto", 256, 56_000, "cpu").loss == "ce"          # 0.21 GiB
