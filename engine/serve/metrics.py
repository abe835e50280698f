"""Prometheus metrics of the service: requests by endpoint and status, latency histograms by
endpoint, the model in service and reloads. One registry per app (tests make several); with several
worker processes prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR) sums them."""

from __future__ import annotations

import os

from engine.inference.recommend import Recommender

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self.registry = CollectorRegistry()
        self.requests = Counter("sessrec_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("sessrec_request_duration_seconds", "request latency in seconds",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.model_info = Gauge("sessrec_model_info", "the model in service (value 1)",
                                ["model", "run_id", "dataset", "runtime"], registry=self.registry,
                                multiprocess_mode="liveall")
        self.reloads = Counter("sessrec_reloads", "model reloads by result", ["result"], registry=self.registry)
        # A/B servers: sessions served and feedback events per arm, and the model in each arm
        self.arm_requests = Counter("sessrec_arm_sessions", "sessions answered by each A/B arm", ["arm"],
                                    registry=self.registry)
        self.feedback = Counter("sessrec_feedback", "feedback events by arm and event", ["arm", "event"],
                                registry=self.registry)
        self.arm_info = Gauge("sessrec_arm_info", "the model in each A/B arm (value 1)", ["arm", "model", "run_id"],
                              registry=self.registry, multiprocess_mode="liveall")
        self._arm_labels: dict[str, tuple[str, ...]] = {}
        for r in ("ok", "failed"):
            self.reloads.labels(r)
        self._model_labels: tuple[str, ...] | None = None

    def set_model(self, rec: Recommender) -> None:
        # the previous model's series drops to 0 (clear() does not exist in multiprocess mode)
        if self._model_labels is not None:
            self.model_info.labels(*self._model_labels).set(0)
        m = rec.meta
        self._model_labels = (m.get("model", ""), m.get("run_id") or "", m.get("dataset", ""),
                              m.get("runtime", "torch"))
        self.model_info.labels(*self._model_labels).set(1)

    def set_arm(self, arm: str, rec: Recommender) -> None:
        if arm in self._arm_labels:
            self.arm_info.labels(*self._arm_labels[arm]).set(0)
        self._arm_labels[arm] = (arm, rec.meta.get("model", ""), rec.meta.get("run_id") or "")
        self.arm_info.labels(*self._arm_labels[arm]).set(1)

    def reloaded(self, ok: bool, rec: Recommender | None, arm: str | None = None) -> None:
        self.reloads.labels("ok" if ok else "failed").inc()
        if ok and rec is not None:
            if arm is None:
                self.set_model(rec)
            else:
                self.set_arm(arm, rec)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess
            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg)
            return generate_latest(reg), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
