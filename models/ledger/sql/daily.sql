-- One day of usage per tenant, tier and size class; peak_gpus is the most GPU-equivalents the
-- tenant held at once (summed over nodes within each hour, then the day's maximum).
INSERT INTO tenant_usage_daily
WITH per_hour AS (
    SELECT hour, tenant, hardware_tier, size_class,
           sum(allocated_gpu_seconds) AS allocated_gpu_seconds,
           sum(used_gpu_seconds) AS used_gpu_seconds,
           sum(peak_gpus) AS gpus
    FROM usage_hourly
    WHERE day = $1
    GROUP BY ALL
)
SELECT $1, tenant, hardware_tier, size_class,
       (sum(allocated_gpu_seconds) / 3600)::DECIMAL(38, 6),
       (sum(used_gpu_seconds) / 3600)::DECIMAL(38, 6),
       max(gpus)
FROM per_hour
GROUP BY ALL;
