-- The warehouse. Every table that a daily partition writes has a `day` column, and a rerun
-- of the partition deletes and rewrites exactly that day.
CREATE TABLE IF NOT EXISTS ledger (
    sample_id VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    duration_s DOUBLE NOT NULL,
    cluster VARCHAR NOT NULL,
    node VARCHAR NOT NULL,
    gpu_uuid VARCHAR NOT NULL,
    gpu_product VARCHAR NOT NULL,
    mig_profile VARCHAR,
    gpu_equivalents DOUBLE NOT NULL,
    tenant VARCHAR NOT NULL,
    namespace VARCHAR,
    pod VARCHAR,
    pod_uid VARCHAR,
    workload_kind VARCHAR NOT NULL,
    model VARCHAR,
    model_params_b DOUBLE,
    allocated_gpu_seconds DOUBLE NOT NULL,
    used_gpu_seconds DOUBLE,
    memory_used_bytes BIGINT,
    source VARCHAR NOT NULL,
    hardware_tier VARCHAR NOT NULL,
    size_class VARCHAR NOT NULL,
    day DATE NOT NULL
);

CREATE TABLE IF NOT EXISTS request_work (
    sample_id VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    duration_s DOUBLE NOT NULL,
    cluster VARCHAR NOT NULL,
    namespace VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    tenant VARCHAR NOT NULL,
    request_seconds DOUBLE NOT NULL,
    tokens DOUBLE,
    source VARCHAR NOT NULL,
    day DATE NOT NULL
);

CREATE TABLE IF NOT EXISTS usage_hourly (
    day DATE NOT NULL,
    hour TIMESTAMPTZ NOT NULL,
    cluster VARCHAR NOT NULL,
    node VARCHAR NOT NULL,
    tenant VARCHAR NOT NULL,
    hardware_tier VARCHAR NOT NULL,
    size_class VARCHAR NOT NULL,
    gpu_product VARCHAR NOT NULL,
    mig_profile VARCHAR,
    model VARCHAR,
    workload_kind VARCHAR NOT NULL,
    allocated_gpu_seconds DECIMAL(38, 6) NOT NULL,
    used_gpu_seconds DECIMAL(38, 6),
    used_missing_rows BIGINT NOT NULL,
    peak_gpus DOUBLE NOT NULL,
    ledger_rows BIGINT NOT NULL
);
