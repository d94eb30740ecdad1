-- One day of the ledger rolled up per hour, node, tenant, tier, size class and model.
-- peak_gpus: the most GPU-equivalents the group held at once within the hour.
INSERT INTO usage_hourly
WITH per_instant AS (
    SELECT window_start, date_trunc('hour', window_start) AS hour, cluster, node, tenant,
           hardware_tier, size_class, gpu_product, mig_profile, model, workload_kind,
           sum(allocated_gpu_seconds::DECIMAL(38, 6)) AS allocated_gpu_seconds,
           sum(used_gpu_seconds::DECIMAL(38, 6)) AS used_gpu_seconds,
           count(*) FILTER (WHERE used_gpu_seconds IS NULL) AS used_missing_rows,
           sum(allocated_gpu_seconds / duration_s) AS gpus,
           count(*) AS ledger_rows
    FROM ledger
    WHERE day = $1
    GROUP BY ALL
)
SELECT $1 AS day, hour, cluster, node, tenant, hardware_tier, size_class, gpu_product,
       mig_profile, model, workload_kind,
       sum(allocated_gpu_seconds), sum(used_gpu_seconds), sum(used_missing_rows),
       max(gpus), sum(ledger_rows)
FROM per_instant
GROUP BY ALL;
