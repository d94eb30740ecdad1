-- Per device and interval: sum of allocated GPU-seconds (idle included) against the
-- device's capacity, duration x GPU-equivalents. Rows from two sources for one device and
-- interval are a violation too: they would bill the same GPU twice.
-- A device-interval that overlaps a collection gap of its own source (models/ledger/gaps.py)
-- lacks the rows of what could not be read, so it may hold less than capacity (the rest is
-- the gap's, never idle), but still never more.
WITH intervals AS (
    SELECT cluster, node, gpu_uuid, window_start, duration_s,
           window_start + to_microseconds((duration_s * 1e6)::BIGINT) AS window_end,
           max(gpu_equivalents) * duration_s AS capacity_gpu_seconds,
           sum(allocated_gpu_seconds) AS allocated_gpu_seconds,
           count(DISTINCT source) AS sources, any_value(source) AS source,
           min(gpu_equivalents) <> max(gpu_equivalents) AS mixed_equivalents,
           count(*) AS row_count
    FROM ledger
    WHERE day = $1
    GROUP BY cluster, node, gpu_uuid, window_start, duration_s
),
gaps AS (
    SELECT * FROM collection_gaps
    WHERE window_end > $1::DATE::TIMESTAMPTZ AND window_start < ($1::DATE + 1)::TIMESTAMPTZ
),
-- One equi-join per scope (a device, a node, the whole cluster), so each is a hash join.
excused AS (
    SELECT i.cluster, i.node, i.gpu_uuid, i.window_start, i.duration_s
    FROM intervals i JOIN gaps g
      ON g.cluster = i.cluster AND g.source = i.source AND g.gpu_uuid = i.gpu_uuid
    WHERE (g.node IS NULL OR g.node = i.node)
      AND g.window_start < i.window_end AND g.window_end > i.window_start
    UNION
    SELECT i.cluster, i.node, i.gpu_uuid, i.window_start, i.duration_s
    FROM intervals i JOIN gaps g
      ON g.cluster = i.cluster AND g.source = i.source AND g.node = i.node
    WHERE g.gpu_uuid IS NULL
      AND g.window_start < i.window_end AND g.window_end > i.window_start
    UNION
    SELECT i.cluster, i.node, i.gpu_uuid, i.window_start, i.duration_s
    FROM intervals i JOIN gaps g ON g.cluster = i.cluster AND g.source = i.source
    WHERE g.node IS NULL AND g.gpu_uuid IS NULL
      AND g.window_start < i.window_end AND g.window_end > i.window_start
)
SELECT i.cluster, i.node, i.gpu_uuid, i.window_start, i.duration_s, i.capacity_gpu_seconds,
       i.allocated_gpu_seconds, i.sources
FROM intervals i
LEFT JOIN excused e USING (cluster, node, gpu_uuid, window_start, duration_s)
WHERE CASE WHEN e.cluster IS NULL
           THEN abs(i.allocated_gpu_seconds - i.capacity_gpu_seconds)
           ELSE i.allocated_gpu_seconds - i.capacity_gpu_seconds END
          > $2 * greatest(i.row_count, 1) * greatest(i.duration_s, 1)
   OR i.sources > 1
   OR i.mixed_equivalents
ORDER BY i.window_start, i.gpu_uuid
LIMIT $3;
