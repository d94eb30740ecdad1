"""Writes usage.parquet: the hourly ledger rows of DESIGN.md's worked example (October 2026).

acme: 3 H100 GPUs every hour for a 70B model; 1,200 A100 GPU-hours of a 13B model (2 GPUs for
the first 600 hours); 300 L4 GPU-hours of an 8B model (1 GPU for the first 300 hours).
zen: 1,000 H100 GPU-hours of a 7B model (2 GPUs for the first 500 hours).
Run: .venv/bin/python examples/design-example/make_usage.py"""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from models.ledger.usage import ledger_table, make_sample_id

START = datetime(2026, 10, 1, tzinfo=UTC)
WORKLOADS = [
    # tenant, product, gpus, hours, model, params (B)
    ("acme", "NVIDIA H100 80GB HBM3", 3, 744, "llama-3.1-70b", 70.0),
    ("acme", "NVIDIA A100-SXM4-80GB", 2, 600, "llama-2-13b", 13.0),
    ("acme", "NVIDIA L4", 1, 300, "llama-3.1-8b", 8.0),
    ("zen", "NVIDIA H100 80GB HBM3", 2, 500, "mistral-7b", 7.0),
]


def rows() -> list[dict[str, object]]:
    out = []
    for tenant, product, gpus, hours, model, params in WORKLOADS:
        node = f"{tenant}-{product.split()[-1].lower()}"
        for hour in range(hours):
            start = START + timedelta(hours=hour)
            for gpu in range(gpus):
                uuid = f"GPU-{tenant}-{model}-{gpu}"
                out.append({
                    "sample_id": make_sample_id("example", node, uuid, start.isoformat()),
                    "window_start": start, "duration_s": 3600.0, "cluster": "example",
                    "node": node, "gpu_uuid": uuid, "gpu_product": product,
                    "mig_profile": None, "gpu_equivalents": 1.0, "tenant": tenant,
                    "namespace": f"team-{tenant}", "pod": f"{model}-0", "pod_uid": f"uid-{model}",
                    "workload_kind": "inference", "model": model, "model_params_b": params,
                    "allocated_gpu_seconds": 3600.0, "used_gpu_seconds": 3600.0 * 0.8,
                    "memory_used_bytes": 40 * 2**30, "source": "example",
                })
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("usage.parquet")
    pq.write_table(ledger_table(rows()), path, compression="zstd")
    print(f"wrote {path}")
