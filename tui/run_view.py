"""What the Train screen shows of a run, without widgets (tested directly): its headline numbers."""

from __future__ import annotations

from engine.core.schema import Protocol
from engine.runs import RunState
from tui.format import fmt_duration, fmt_num


def stats_lines(st: RunState) -> list[tuple[str, str]]:
    """The run's headline numbers for the live view."""
    ev = st.last_step
    out = [("status", str(st.status)), ("model", st.model or "-"), ("dataset", st.dataset or "-"),
           ("device", st.device or "-")]
    if st.model and st.dataset:
        out.insert(1, ("run", f"{st.model} on {st.dataset}"))
    if st.device_info.get("gpu_name") and (st.device or "").startswith("cuda"):
        out.append(("gpu", f"{st.device_info['gpu_name']} ({st.device_info.get('gpu_memory_gb')} GB)"))
    if st.n_params:
        out.append(("parameters", f"{st.n_params:,}"))
    if ev is not None:
        out.append(("examples/s", fmt_num(ev.examples_per_s)))
        out.append(("loss", fmt_num(ev.loss)))
        if not st.finished:
            out.append(("ETA", fmt_duration(ev.eta_s)))
        if ev.gpu_mem_mb is not None:
            out.append(("GPU memory", f"{ev.gpu_mem_mb:,.0f} MB peak"))
    if st.epoch_seconds:
        out.append(("epoch time", fmt_duration(st.epoch_seconds[-1])))
    if st.best_epoch:
        out.append(("best epoch", f"{st.best_epoch} (val R@10 {fmt_num(st.best_value)})"))
    test = [f"{p} {fmt_num(st.test[p].get('recall@10'))}" for p in Protocol if st.test.get(p)]
    if test:
        out.append(("test R@10", ", ".join(test)))
    return out
