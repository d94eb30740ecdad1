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

-- What collectors could not read (models/ledger/gaps.py): no ledger rows exist for it, and
-- conservation lets a device-interval inside a gap of its source hold less than capacity.
CREATE TABLE IF NOT EXISTS collection_gaps (
    gap_id VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    cluster VARCHAR NOT NULL,
    node VARCHAR,                     -- NULL: every node of the cluster
    gpu_uuid VARCHAR,                 -- NULL: every device of the node
    source VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    detail VARCHAR NOT NULL,
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

-- Invoices: drafts are recomputed on every run; a final invoice or adjustment is never
-- updated again (the pipeline only inserts finals, and deletes drafts).
CREATE TABLE IF NOT EXISTS invoices (
    invoice_id VARCHAR PRIMARY KEY,
    number VARCHAR,
    kind VARCHAR NOT NULL,            -- invoice | adjustment
    status VARCHAR NOT NULL,          -- draft | final
    tenant VARCHAR NOT NULL,
    period VARCHAR NOT NULL,          -- YYYY-MM
    plan VARCHAR NOT NULL,
    currency VARCHAR NOT NULL,
    total DECIMAL(18, 4) NOT NULL,
    credit_applied DECIMAL(18, 4) NOT NULL,
    adjusts VARCHAR,                  -- number of the invoice an adjustment corrects
    rate_card_version VARCHAR NOT NULL,
    content_hash VARCHAR NOT NULL,
    inputs_hash VARCHAR NOT NULL,
    document VARCHAR NOT NULL,        -- canonical JSON
    finalized_at TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS invoice_lines (
    invoice_id VARCHAR NOT NULL,
    line_no INTEGER NOT NULL,
    kind VARCHAR NOT NULL,
    description VARCHAR NOT NULL,
    hardware_tier VARCHAR,
    size_class VARCHAR,
    quantity DECIMAL(24, 6) NOT NULL,
    unit VARCHAR NOT NULL,
    unit_price DECIMAL(18, 6) NOT NULL,
    amount DECIMAL(18, 4) NOT NULL
);

CREATE TABLE IF NOT EXISTS period_closes (
    period VARCHAR PRIMARY KEY,
    closed_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS tenant_usage_daily (
    day DATE NOT NULL,
    tenant VARCHAR NOT NULL,
    hardware_tier VARCHAR NOT NULL,
    size_class VARCHAR NOT NULL,
    allocated_gpu_hours DECIMAL(38, 6) NOT NULL,
    used_gpu_hours DECIMAL(38, 6),
    peak_gpus DOUBLE NOT NULL
);
