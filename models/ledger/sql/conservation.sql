-- Per device and interval: sum of allocated GPU-seconds (idle included) against the
-- device's capacity, duration x GPU-equivalents. Rows from two sources for one device and
-- interval are a violation too: they would bill the same GPU twice.
SELECT cluster, node, gpu_uuid, window_start, duration_s,
       max(gpu_equivalents) * duration_s AS capacity_gpu_seconds,
       sum(allocated_gpu_seconds) AS allocated_gpu_seconds,
       count(DISTINCT source) AS sources
FROM ledger
WHERE day = $1
GROUP BY cluster, node, gpu_uuid, window_start, duration_s
HAVING abs(sum(allocated_gpu_seconds) - max(gpu_equivalents) * duration_s)
           > $2 * greatest(count(*), 1) * greatest(duration_s, 1)
    OR count(DISTINCT source) > 1
    OR min(gpu_equivalents) <> max(gpu_equivalents)
ORDER BY window_start, gpu_uuid
LIMIT $3;
