"""Prometheus textfile metrics, `METRICS_DIR/edgecron_<job>.prom`, written atomically."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile


def write_job_metrics(
    metrics_dir: Path,
    job: str,
    *,
    started: float,
    duration: float,
    exit_code: int,
    last_success: float | None,
    counts: Mapping[str, int | float],
) -> Path:
    """Write one job's gauges; `last_success` carries over from earlier runs when this one failed."""
    registry = CollectorRegistry()
    labels = ["job"]
    Gauge("edgecron_job_last_start_timestamp_seconds", "When the last run started.", labels, registry=registry).labels(
        job
    ).set(started)
    Gauge("edgecron_job_duration_seconds", "How long the last run took.", labels, registry=registry).labels(job).set(
        duration
    )
    Gauge("edgecron_job_last_exit_code", "Exit code of the last run.", labels, registry=registry).labels(job).set(
        exit_code
    )
    if last_success is not None:
        Gauge(
            "edgecron_job_last_success_timestamp_seconds", "When the job last succeeded.", labels, registry=registry
        ).labels(job).set(last_success)
    items = Gauge(
        "edgecron_job_items", "Items handled by the last run, by result.", ["job", "result"], registry=registry
    )
    for result, value in sorted(counts.items()):
        if isinstance(value, int | float) and not isinstance(value, bool):
            items.labels(job, result).set(value)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    path = metrics_dir / f"edgecron_{job}.prom"
    write_to_textfile(str(path), registry)
    return path
