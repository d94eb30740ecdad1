-- Per device and interval: sum of allocated GPU-seconds (idle included) against the
-- device's capacity, duration x GPU-equivalents. Rows from two sources for one device and
-- interval are a violation too: they would bill the same GPU twice.
-- A device-interval that overlaps a collection gap of its own source (models/ledger/gaps.py)
-- lacks the rows of what could not be read, so it may hold less than capacity (the rest is
-- the gap's, never idle), but still never more.
WITH unequal AS MATERIALIZED (
    -- The device-intervals that break equality: few, so gaps are looked up for these only.
    SELECT cluster, node, gpu_uuid, window_start, duration_s,
           window_start + to_microseconds((duration_s * 1e6)::BIGINT) AS window_end,
           max(gpu_equivalents) * duration_s AS capacity_gpu_seconds,
           sum(allocated_gpu_seconds) AS allocated_gpu_seconds,
           min(source) <> max(source) AS mixed_sources, any_value(source) AS source,
           $2 * greatest(count(*), 1) * greatest(duration_s, 1) AS tolerance,
           min(gpu_equivalents) <> max(gpu_equivalents) AS mixed_equivalents
    FROM ledger
    WHERE day = $1
    GROUP BY cluster, node, gpu_uuid, window_start, duration_s
    HAVING abs(sum(allocated_gpu_seconds) - max(gpu_equivalents) * duration_s)
               > $2 * greatest(count(*), 1) * greatest(duration_s, 1)
        OR min(source) <> max(source)
        OR min(gpu_equivalents) <> max(gpu_equivalents)
),
-- The number of sources, counted for the few unequal device-intervals only: a DISTINCT
-- aggregate over every group of the day cost a quarter of the check (docs/benchmarks.md).
sources AS (
    SELECT l.cluster, l.node, l.gpu_uuid, l.window_start, l.duration_s,
           count(DISTINCT l.source) AS sources
    FROM ledger l
    SEMI JOIN unequal u USING (cluster, node, gpu_uuid, window_start, duration_s)
    WHERE l.day = $1
    GROUP BY ALL
),
gaps AS (
    SELECT * FROM collection_gaps
    WHERE window_end > $1::DATE::TIMESTAMPTZ AND window_start < ($1::DATE + 1)::TIMESTAMPTZ
),
-- One equi-join per scope (a device, a node, the whole cluster), so each is a hash join.
excused AS (
    SELECT u.cluster, u.node, u.gpu_uuid, u.window_start, u.duration_s
    FROM unequal u JOIN gaps g
      ON g.cluster = u.cluster AND g.source = u.source AND g.gpu_uuid = u.gpu_uuid
    WHERE (g.node IS NULL OR g.node = u.node)
      AND g.window_start < u.window_end AND g.window_end > u.window_start
    UNION
    SELECT u.cluster, u.node, u.gpu_uuid, u.window_start, u.duration_s
    FROM unequal u JOIN gaps g
      ON g.cluster = u.cluster AND g.source = u.source AND g.node = u.node
    WHERE g.gpu_uuid IS NULL
      AND g.window_start < u.window_end AND g.window_end > u.window_start
    UNION
    SELECT u.cluster, u.node, u.gpu_uuid, u.window_start, u.duration_s
    FROM unequal u JOIN gaps g ON g.cluster = u.cluster AND g.source = u.source
    WHERE g.node IS NULL AND g.gpu_uuid IS NULL
      AND g.window_start < u.window_end AND g.window_end > u.window_start
)
SELECT u.cluster, u.node, u.gpu_uuid, u.window_start, u.duration_s, u.capacity_gpu_seconds,
       u.allocated_gpu_seconds, s.sources
FROM unequal u
JOIN sources s USING (cluster, node, gpu_uuid, window_start, duration_s)
LEFT JOIN excused e USING (cluster, node, gpu_uuid, window_start, duration_s)
WHERE e.cluster IS NULL
   OR u.allocated_gpu_seconds - u.capacity_gpu_seconds > u.tolerance
   OR u.mixed_sources
   OR u.mixed_equivalents
ORDER BY u.window_start, u.gpu_uuid
LIMIT $3;
