-- Shared (pooled) endpoints: every `__shared__` row is split among the tenants that sent
-- requests to the same endpoint (cluster, namespace, model) in the same interval, in
-- proportion to their request work; an interval with no requests is `__shared_idle__`.
CREATE OR REPLACE TEMP TABLE classified AS
WITH work AS (
    SELECT cluster, namespace, model, window_start AS work_start,
           window_start + to_microseconds((duration_s * 1e6)::BIGINT) AS work_end,
           tenant AS request_tenant, sum(request_seconds) AS request_seconds
    FROM staged_requests
    GROUP BY ALL
    HAVING sum(request_seconds) > 0
),
shared AS (
    SELECT s.*, w.request_tenant, w.request_seconds,
           sum(w.request_seconds) OVER (PARTITION BY s.sample_id) AS total_request_seconds
    FROM staged s
    LEFT JOIN work w
      ON s.cluster = w.cluster AND s.namespace = w.namespace AND s.model = w.model
     AND s.window_start >= w.work_start AND s.window_start < w.work_end
    WHERE s.tenant = '__shared__'
),
apportioned AS (
    SELECT * EXCLUDE (request_tenant, request_seconds, total_request_seconds) REPLACE (
               CASE WHEN request_tenant IS NULL THEN sample_id
                    ELSE sample_id || ':' || request_tenant END AS sample_id,
               coalesce(request_tenant, '__shared_idle__') AS tenant,
               CASE WHEN request_tenant IS NULL THEN 'idle' ELSE workload_kind END
                   AS workload_kind,
               allocated_gpu_seconds * coalesce(request_seconds / total_request_seconds, 1)
                   AS allocated_gpu_seconds,
               used_gpu_seconds * coalesce(request_seconds / total_request_seconds, 1)
                   AS used_gpu_seconds,
               (memory_used_bytes * coalesce(request_seconds / total_request_seconds, 1))::BIGINT
                   AS memory_used_bytes
           )
    FROM shared
),
everything AS (
    -- IS DISTINCT FROM: a row without a tenant must reach the ledger's NOT NULL and fail
    -- the load, not vanish here.
    SELECT * FROM staged WHERE tenant IS DISTINCT FROM '__shared__'
    UNION ALL BY NAME
    SELECT * FROM apportioned
)
SELECT e.*, t.hardware_tier, s.size_class
FROM everything e
JOIN tier_map t USING (gpu_product)
JOIN size_map s ON s.model_params_b IS NOT DISTINCT FROM e.model_params_b;
