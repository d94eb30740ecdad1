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
    requests BIGINT,
    request_seconds DOUBLE,
    prefill_seconds DOUBLE,
    decode_seconds DOUBLE,
    input_tokens BIGINT,
    output_tokens BIGINT,
    latency_buckets STRUCT(le DOUBLE, count BIGINT)[],
    ttft_buckets STRUCT(le DOUBLE, count BIGINT)[],
    source VARCHAR NOT NULL,
    day DATE NOT NULL
);

-- Days that passed the conservation check, with what was checked: the day's ledger rows
-- (count and a fingerprint of the columns the check reads) and the collection gaps that
-- overlap it. The close re-checks only a day without a record that matches it now
-- (models/ledger/warehouse.py, `unconfirmed_days`); any change to the day's rows,
-- through a load or by hand, or to its gaps, or to the check itself (`rule`) is a mismatch.
CREATE TABLE IF NOT EXISTS conservation_checks (
    day DATE NOT NULL,
    rule VARCHAR NOT NULL,            -- sha256 of the check's query and tolerance
    ledger_rows BIGINT NOT NULL,
    ledger_fingerprint HUGEINT NOT NULL,
    gaps_fingerprint HUGEINT NOT NULL,
    checked_at TIMESTAMPTZ NOT NULL
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

-- The hourly netting of each invoice (models.billing.pricing.NettedHour), written with it:
-- per hour and tier, on_demand and covered GPU-hours per size class (covered per
-- reservation), and each reservation's unused GPU-hours (size_class null).
CREATE TABLE IF NOT EXISTS invoice_hours (
    invoice_id VARCHAR NOT NULL,
    hour TIMESTAMPTZ NOT NULL,
    hardware_tier VARCHAR NOT NULL,
    size_class VARCHAR,
    reservation_id VARCHAR,
    hour_use VARCHAR NOT NULL,        -- on_demand | covered | unused
    gpu_hours DECIMAL(24, 6) NOT NULL
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

-- Analytics: each daily partition analyses a look-back window ending with its day and
-- rewrites exactly that day's rows; the latest analysis is the greatest `day`.
CREATE TABLE IF NOT EXISTS usage_shifts (
    day DATE NOT NULL,
    tenant VARCHAR NOT NULL,
    series_name VARCHAR NOT NULL,
    change_date DATE NOT NULL,
    level_before DOUBLE NOT NULL,
    level_after DOUBLE NOT NULL,
    relative_change DOUBLE,
    confidence DOUBLE NOT NULL,
    confirmed BOOLEAN NOT NULL,
    days_at_new_level BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS tier_change_recommendations (
    day DATE NOT NULL,
    tenant VARCHAR NOT NULL,
    as_of DATE NOT NULL,
    period VARCHAR NOT NULL,          -- YYYY-MM the projection is for
    current_plan VARCHAR NOT NULL,
    recommended_plan VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    change_date DATE,
    series_name VARCHAR,
    level_before DOUBLE,
    level_after DOUBLE,
    confidence DOUBLE,
    projected_gpu_hours DECIMAL(18, 6),
    projected_usage VARCHAR,
    projected_bills VARCHAR,
    current_plan_total DECIMAL(18, 2),
    recommended_plan_total DECIMAL(18, 2),
    currency VARCHAR,
    rate_card_version VARCHAR
);

CREATE TABLE IF NOT EXISTS reservation_recommendations (
    day DATE NOT NULL,
    tenant VARCHAR NOT NULL,
    hardware_tier VARCHAR NOT NULL,
    mig_profile VARCHAR,
    sla_class VARCHAR NOT NULL,
    unit_gpu_equivalents DOUBLE NOT NULL,
    recommended_gpus BIGINT NOT NULL,      -- whole GPUs, or MIG instances of mig_profile
    cost_optimal_gpus BIGINT NOT NULL,
    p95_demand_gpus DOUBLE NOT NULL,
    current_reserved_gpus BIGINT NOT NULL,
    break_even_utilization DOUBLE NOT NULL,
    currency VARCHAR NOT NULL,
    expected_monthly_cost_recommended DECIMAL(18, 2) NOT NULL,
    expected_monthly_cost_current DECIMAL(18, 2) NOT NULL,
    expected_monthly_cost_none DECIMAL(18, 2) NOT NULL,
    expected_overflow_gpu_hours_per_month DECIMAL(18, 6) NOT NULL,
    expected_overflow_hours_per_month DOUBLE NOT NULL,
    month_hours BIGINT NOT NULL,
    hours_observed BIGINT NOT NULL,
    half_life_hours DOUBLE NOT NULL,
    as_of TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS reservation_overflow_pools (
    day DATE NOT NULL,
    hardware_tier VARCHAR NOT NULL,
    mig_profile VARCHAR,
    pool_gpus BIGINT NOT NULL,
    sum_of_tenant_overflow_gpus BIGINT NOT NULL,
    quantile DOUBLE NOT NULL,
    tenants BIGINT NOT NULL
);

-- Every quota figure written as a manifest or applied to the cluster, one row per figure and
-- run: appended, never updated. A ResourceQuota figure has a namespace and no flavor; a Kueue
-- ClusterQueue figure has a flavor (hardware tier) and no namespace. `resource` is the key as
-- the object writes it (`requests.nvidia.com/gpu` in a ResourceQuota, `nvidia.com/gpu` in a
-- ClusterQueue). A rerun of a day replaces that day's `manifest` rows; what was applied to a
-- cluster stays as history.
CREATE TABLE IF NOT EXISTS scheduler_quota_changes (
    day DATE,                         -- the analytics partition; null from `chargeback quotas`
    changed_at TIMESTAMPTZ NOT NULL,
    kind VARCHAR NOT NULL,            -- ResourceQuota | ClusterQueue
    namespace VARCHAR,
    name VARCHAR NOT NULL,
    flavor VARCHAR,
    resource VARCHAR NOT NULL,
    before_gpus BIGINT,               -- null: the object or the figure did not exist
    after_gpus BIGINT NOT NULL,
    in_use_gpus BIGINT NOT NULL,
    recommended_gpus BIGINT NOT NULL,
    rule VARCHAR NOT NULL,            -- recommended | max-step | in-use floor
    dry_run BOOLEAN NOT NULL,
    outcome VARCHAR NOT NULL          -- manifest | dry-run | applied | unchanged | conflict | error: ...
);

-- Spool files the ingest could not read (not Parquet, truncated, a required column missing or
-- empty): moved out of the spool into its quarantine folder or prefix, kept there, and listed
-- here so that finance sees the gap. Appended, never deleted: the file has left the spool, so
-- a rerun of the day does not meet it again.
CREATE TABLE IF NOT EXISTS spool_quarantine (
    day DATE NOT NULL,                -- the UTC day whose ingest found it
    kind VARCHAR NOT NULL,            -- usage | requests
    file VARCHAR NOT NULL,            -- where it was in the spool
    quarantined_as VARCHAR NOT NULL,  -- where it is now
    size_bytes BIGINT,
    reason VARCHAR NOT NULL,
    quarantined_at TIMESTAMPTZ NOT NULL
);

-- Month-end forecasts (models/planning/forecast.py), one row per analytics day and tenant:
-- GPU-hours and the invoice total with 80% and 95% intervals, priced by the pricing engine.
CREATE TABLE IF NOT EXISTS tenant_forecasts (
    day DATE NOT NULL,
    tenant VARCHAR NOT NULL,
    period VARCHAR NOT NULL,
    as_of TIMESTAMPTZ NOT NULL,
    history_start DATE,
    models VARCHAR,
    currency VARCHAR NOT NULL,
    rate_card_version VARCHAR NOT NULL,
    actual_gpu_hours DECIMAL(18, 6) NOT NULL,
    gpu_hours DECIMAL(18, 6) NOT NULL,
    gpu_hours_lo80 DECIMAL(18, 6) NOT NULL,
    gpu_hours_hi80 DECIMAL(18, 6) NOT NULL,
    gpu_hours_lo95 DECIMAL(18, 6) NOT NULL,
    gpu_hours_hi95 DECIMAL(18, 6) NOT NULL,
    amount DECIMAL(18, 4) NOT NULL,
    amount_lo80 DECIMAL(18, 4) NOT NULL,
    amount_hi80 DECIMAL(18, 4) NOT NULL,
    amount_lo95 DECIMAL(18, 4) NOT NULL,
    amount_hi95 DECIMAL(18, 4) NOT NULL
);

-- The expected month-to-date GPU-hours at the end of each remaining day of the month (the fan
-- chart, and what the next day's check compares its actuals with).
CREATE TABLE IF NOT EXISTS tenant_forecast_days (
    day DATE NOT NULL,
    tenant VARCHAR NOT NULL,
    period VARCHAR NOT NULL,
    forecast_day DATE NOT NULL,
    gpu_hours DECIMAL(18, 6) NOT NULL,
    gpu_hours_lo80 DECIMAL(18, 6) NOT NULL,
    gpu_hours_hi80 DECIMAL(18, 6) NOT NULL,
    gpu_hours_lo95 DECIMAL(18, 6) NOT NULL,
    gpu_hours_hi95 DECIMAL(18, 6) NOT NULL
);

-- Budgets (models/planning/budgets.py), one row per analytics day and tenant with a budget:
-- month-to-date spend in the budget's unit (`amount` in `currency`, or `gpu_hours`) against
-- its monthly `limit_value`, the month-end forecast's point and 95% interval in that unit, and
-- the first day the spend (actual, then the point forecast) reaches the budget.
CREATE TABLE IF NOT EXISTS tenant_budgets (
    day DATE NOT NULL,
    tenant VARCHAR NOT NULL,
    period VARCHAR NOT NULL,
    as_of TIMESTAMPTZ NOT NULL,
    unit VARCHAR NOT NULL,            -- amount | gpu_hours
    currency VARCHAR,                 -- the rate card's; the figures in `amount` use it
    limit_value DECIMAL(18, 6) NOT NULL,
    spent DECIMAL(18, 6) NOT NULL,
    spent_amount DECIMAL(18, 4) NOT NULL,
    spent_gpu_hours DECIMAL(18, 6) NOT NULL,
    used_pct DECIMAL(12, 2) NOT NULL,
    forecast DECIMAL(18, 6),          -- null: no forecast that day
    forecast_lo95 DECIMAL(18, 6),
    forecast_hi95 DECIMAL(18, 6),
    forecast_pct DECIMAL(12, 2),
    runs_out_on DATE,                 -- null: the budget lasts the month (as far as is known)
    enforcement VARCHAR NOT NULL      -- off | dry-run | on
);

-- Each day of the period for the burn-down: the spend by the day's end (days of data) or the
-- forecast's cumulative scenarios (the days after), in the budget's unit.
CREATE TABLE IF NOT EXISTS tenant_budget_days (
    day DATE NOT NULL,
    tenant VARCHAR NOT NULL,
    period VARCHAR NOT NULL,
    budget_day DATE NOT NULL,
    actual DECIMAL(18, 6),
    forecast DECIMAL(18, 6),
    forecast_lo80 DECIMAL(18, 6),
    forecast_hi80 DECIMAL(18, 6),
    forecast_lo95 DECIMAL(18, 6),
    forecast_hi95 DECIMAL(18, 6)
);

-- The thresholds crossed by the day's analysis (only crossed ones): what alerts are raised for.
CREATE TABLE IF NOT EXISTS budget_thresholds (
    day DATE NOT NULL,
    tenant VARCHAR NOT NULL,
    period VARCHAR NOT NULL,
    basis VARCHAR NOT NULL,           -- actual (month-to-date) | forecast (month-end point)
    percent DECIMAL(12, 2) NOT NULL,
    unit VARCHAR NOT NULL,
    currency VARCHAR,
    limit_value DECIMAL(18, 6) NOT NULL,
    threshold DECIMAL(18, 6) NOT NULL,
    crossed_on DATE NOT NULL,         -- the day whose data crossed it (forecast: the analysis day)
    value DECIMAL(18, 6) NOT NULL,
    runs_out_on DATE
);

-- Alerts delivered to Alertmanager: appended, never rewritten, so that one alert goes out per
-- tenant, period, basis, threshold and budget however often a day is rerun.
CREATE TABLE IF NOT EXISTS budget_alerts (
    tenant VARCHAR NOT NULL,
    period VARCHAR NOT NULL,
    basis VARCHAR NOT NULL,
    percent DECIMAL(12, 2) NOT NULL,
    unit VARCHAR NOT NULL,
    limit_value DECIMAL(18, 6) NOT NULL,
    crossed_on DATE NOT NULL,
    value DECIMAL(18, 6) NOT NULL,
    sent_at TIMESTAMPTZ NOT NULL,
    alertmanager VARCHAR NOT NULL     -- the URL it was posted to
);

-- Every change of a queue's stopPolicy (budget path), or of a ClusterQueue's borrowing (quota
-- path: before/after `cohort limits` or `borrowingLimit 0`), made, tried or written as a
-- manifest for a budget, with its reason: what tenants and operators see. Appended.
CREATE TABLE IF NOT EXISTS budget_holds (
    day DATE NOT NULL,                -- the analytics partition that made it
    tenant VARCHAR NOT NULL,
    period VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,            -- ClusterQueue | LocalQueue
    namespace VARCHAR,
    name VARCHAR NOT NULL,
    action VARCHAR NOT NULL,          -- hold | release (stopPolicy); no-borrowing | restore-borrowing
    before_policy VARCHAR,            -- the live stopPolicy; null without a cluster
    after_policy VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL,
    outcome VARCHAR NOT NULL          -- manifest | dry-run | applied | conflict | error: ...
);

-- Inference: latency against each tenant's P95 target in and out of its bursts, per endpoint
-- (namespace + model), over the look-back window ending with `day`
-- (models/planning/latency.py); the dedicated reservations its rule recommends; the request
-- rate the bursts were found in; and off-peak moves of batch and fine-tuning work
-- (models/planning/off_peak.py). Rewritten by day like every analytics table.
CREATE TABLE IF NOT EXISTS latency_findings (
    day DATE NOT NULL,
    tenant VARCHAR NOT NULL,
    namespace VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    hardware_tier VARCHAR,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    target_p95_s DECIMAL(18, 6),          -- null: no target declared
    p95_s DOUBLE,                         -- null: no observations (never read as zero)
    p95_in_bursts_s DOUBLE,
    p95_out_of_bursts_s DOUBLE,
    breached BOOLEAN NOT NULL,            -- P95 in bursts above target x 1.2
    requests_in_bursts BIGINT NOT NULL,
    late_requests_in_bursts BIGINT NOT NULL,
    burst_demand_gpus DOUBLE NOT NULL,
    observed_hours DOUBLE NOT NULL,
    burst_episodes BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS burst_episodes (
    day DATE NOT NULL,
    tenant VARCHAR NOT NULL,
    namespace VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    episode_start TIMESTAMPTZ NOT NULL,
    episode_end TIMESTAMPTZ NOT NULL,     -- end of its last interval
    intervals BIGINT NOT NULL,
    peak_requests_per_s DOUBLE NOT NULL,
    peak_gpus DOUBLE NOT NULL
);

CREATE TABLE IF NOT EXISTS request_rates (
    day DATE NOT NULL,
    tenant VARCHAR NOT NULL,
    namespace VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    duration_s DOUBLE NOT NULL,
    requests_per_s DOUBLE NOT NULL,
    gpus DOUBLE NOT NULL                  -- the tenant's GPU-seconds there / duration_s
);

CREATE TABLE IF NOT EXISTS dedicated_reservation_recommendations (
    day DATE NOT NULL,
    tenant VARCHAR NOT NULL,
    namespace VARCHAR NOT NULL,           -- where the reservation's quota goes
    endpoint_namespace VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    hardware_tier VARCHAR NOT NULL,
    recommended_gpus BIGINT NOT NULL,
    burst_demand_gpus DOUBLE NOT NULL,
    target_p95_s DECIMAL(18, 6) NOT NULL,
    p95_in_bursts_s DOUBLE NOT NULL,
    p95_out_of_bursts_s DOUBLE,
    late_requests_per_month BIGINT NOT NULL,
    currency VARCHAR NOT NULL,
    monthly_cost DECIMAL(18, 2) NOT NULL,
    cost_per_late_request DECIMAL(18, 4)
);

CREATE TABLE IF NOT EXISTS off_peak_recommendations (
    day DATE NOT NULL,
    tenant VARCHAR NOT NULL,
    period VARCHAR NOT NULL,              -- YYYY-MM, up to the end of `day`
    hardware_tier VARCHAR NOT NULL,
    kinds VARCHAR NOT NULL,               -- workload kinds moved, comma-separated
    peak_gpu_hours DECIMAL(18, 6) NOT NULL,
    moved_gpu_hours DECIMAL(18, 6) NOT NULL,
    unplaced_gpu_hours DECIMAL(18, 6) NOT NULL,
    freed_peak_gpus DECIMAL(18, 6) NOT NULL,
    currency VARCHAR NOT NULL,
    -- The tenant's whole move (all its tiers), repeated on each tier's row.
    charges_as_run DECIMAL(18, 4) NOT NULL,
    charges_moved DECIMAL(18, 4) NOT NULL,
    saving DECIMAL(18, 4) NOT NULL
);
