"""Prometheus metrics: every series the module exports, defined in one place.

Names follow the Prometheus style (`edge_inference_<what>_<unit>`). The objects live in a registry owned
by the running module (`MetricsRegistry`), so tests can build several modules in one process without
clashing on the default global registry.
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

# Latency buckets from 0.5 ms to 10 s: inference on a T4 is 1-5 ms, decoding 1080p JPEG 5-20 ms.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

STAGES = ("queue", "read", "decode", "inference", "postprocess", "write", "send", "total")


class MetricsRegistry:
    """The module's metric families; one instance per running module."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames = Counter(
            "edge_inference_frames", "Frames processed, by outcome (ok, failed)", ["outcome"], registry=r
        )
        self.failures = Counter("edge_inference_frame_errors", "Failed frames, by error code", ["code"], registry=r)
        self.detections = Counter("edge_inference_detections", "Detections reported, by label", ["label"], registry=r)
        self.stage_seconds = Histogram(
            "edge_inference_stage_seconds",
            "Per-frame time spent in each stage",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "edge_inference_batch_size",
            "Frames per inference batch",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.queue_depth = Gauge(
            "edge_inference_queue_depth", "Items waiting in each bounded queue", ["queue"], registry=r
        )
        self.outbox_depth = Gauge("edge_inference_outbox_messages", "Messages waiting in the outbox", registry=r)
        self.outbox_age = Gauge(
            "edge_inference_outbox_oldest_age_seconds", "Age of the oldest message in the outbox", registry=r
        )
        self.outbox_dropped = Counter(
            "edge_inference_outbox_dropped", "Messages dropped at the outbox bound", ["reason"], registry=r
        )
        self.messages_sent = Counter(
            "edge_inference_messages_sent", "Messages delivered to edgeHub, by output", ["output"], registry=r
        )
        self.twin_updates = Counter(
            "edge_inference_twin_updates",
            "Twin desired properties, by result (applied, rejected)",
            ["result"],
            registry=r,
        )
        self.paused = Gauge("edge_inference_paused", "1 while intake is paused", ["reason"], registry=r)
        self.provider = Info("edge_inference_execution_provider", "Active ONNX Runtime provider", registry=r)
        self.model = Info("edge_inference_model", "Model name, version and sha256", registry=r)
        self.model_rollouts = Counter(
            "edge_inference_model_rollouts",
            "Model rollouts, by outcome (swapped, refused, rolledBack, autoRolledBack)",
            ["outcome"],
            registry=r,
        )
        self.http_requests = Counter(
            "edge_inference_http_requests",
            "REST API requests, by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.free_bytes = Gauge(
            "edge_inference_free_bytes", "Free space on the output share and state volume", ["volume"], registry=r
        )
        self.alarms = Gauge("edge_inference_alarm_active", "1 while a health alarm is raised", ["alarm"], registry=r)
        # The share at scale (share/retention.py, ops/progress.py, share/review.py).
        self.output_bytes = Gauge(
            "edge_inference_output_bytes",
            "Bytes of the files the module wrote, per output folder",
            ["folder"],
            registry=r,
        )
        self.output_files = Gauge(
            "edge_inference_output_files", "Files the module wrote, per output folder", ["folder"], registry=r
        )
        self.retention_removed_files = Counter(
            "edge_inference_retention_removed_files", "Output files removed by retention", ["folder"], registry=r
        )
        self.retention_removed_bytes = Counter(
            "edge_inference_retention_removed_bytes", "Bytes removed by output retention", ["folder"], registry=r
        )
        self.retention_lag = Gauge(
            "edge_inference_retention_lag_seconds",
            "How long the oldest output file has been past its limit (0: retention keeps up)",
            ["folder"],
            registry=r,
        )
        self.backlog_frames = Gauge(
            "edge_inference_backlog_frames",
            "Frames on the input share not yet done (estimated from the last sweep)",
            registry=r,
        )
        self.backlog_rate = Gauge(
            "edge_inference_backlog_frames_per_second",
            "Frames done per second over the last progress interval",
            registry=r,
        )
        self.backlog_seconds_left = Gauge(
            "edge_inference_backlog_seconds_left",
            "Estimated seconds until the backlog is done (-1: not draining)",
            registry=r,
        )
        self.review_copies = Counter(
            "edge_inference_review_copies", "Frames copied to review/, by why they were chosen", ["reason"], registry=r
        )
        self.review_skipped = Counter(
            "edge_inference_review_skipped",
            "Frames chosen for review but not copied (hourlyCap, failed)",
            ["reason"],
            registry=r,
        )
        # REST API (http_api.py): latency per endpoint and requests being served now.
        self.http_seconds = Histogram(
            "edge_inference_http_request_seconds",
            "REST API request latency, by endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            "edge_inference_http_predict_in_flight", "/predict requests being served now", registry=r
        )
        # GPU watch (health.GpuMonitor, NVML), labelled by the CUDA device index.
        self.gpu_temperature = Gauge(
            "edge_inference_gpu_temperature_celsius", "GPU core temperature", ["device"], registry=r
        )
        self.gpu_utilization = Gauge(
            "edge_inference_gpu_utilization_ratio",
            "GPU busy fraction over NVML's last sample period",
            ["device"],
            registry=r,
        )
        self.gpu_memory_used = Gauge(
            "edge_inference_gpu_memory_used_bytes", "GPU memory in use (all processes)", ["device"], registry=r
        )
        self.gpu_memory_total = Gauge(
            "edge_inference_gpu_memory_total_bytes", "GPU memory installed", ["device"], registry=r
        )
        # Process health of this module (CPU, memory, file descriptors, GC, Python version), as a default
        # client-library registry would export them; they read /proc only when scraped.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        r.register(GC_COLLECTOR)
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
        for outcome in ("ok", "failed"):
            self.frames.labels(outcome=outcome)
