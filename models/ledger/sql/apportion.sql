-- Shared (pooled) endpoints: every `__shared__` row is split among the tenants that sent
-- requests to the same endpoint (cluster, namespace, model) in the same interval, in
-- proportion to their request work; an interval with no requests is `__shared_idle__`.
-- Work is the best measure every tenant of the endpoint-interval has (models/ledger/usage.py
-- REQUEST_WORK_SCHEMA): prefill + decode seconds, else request seconds, else input and output
-- tokens at the cost model's GPU-seconds per token (PREFILL_/DECODE_GPU_SECONDS_PER_TOKEN). Mixing measures would compare seconds with tokens,
-- so an endpoint-interval whose tenants share none fails the load, naming it.
-- A query, not a table: warehouse._replace_days inserts its rows into the ledger directly, so
-- a load writes the day's rows once (a temp table between would copy them all again).
WITH tenant_work AS (
    SELECT cluster, namespace, model, window_start AS work_start,
           window_start + to_microseconds((duration_s * 1e6)::BIGINT) AS work_end,
           tenant AS request_tenant,
           bool_and(prefill_seconds IS NOT NULL AND decode_seconds IS NOT NULL) AS has_phases,
           bool_and(request_seconds IS NOT NULL) AS has_seconds,
           bool_and(input_tokens IS NOT NULL AND output_tokens IS NOT NULL) AS has_tokens,
           sum(prefill_seconds + decode_seconds) AS phase_seconds,
           sum(request_seconds) AS request_seconds,
           sum(input_tokens * ?::DOUBLE + output_tokens * ?::DOUBLE) AS weighted_tokens
    FROM staged_requests
    GROUP BY ALL
),
basis AS (
    SELECT cluster, namespace, model, work_start,
           CASE WHEN bool_and(has_phases) THEN 'phases'
                WHEN bool_and(has_seconds) THEN 'seconds'
                WHEN bool_and(has_tokens) THEN 'tokens' END AS basis
    FROM tenant_work
    GROUP BY ALL
),
work AS (
    SELECT t.cluster, t.namespace, t.model, t.work_start, t.work_end, t.request_tenant,
           CASE b.basis WHEN 'phases' THEN t.phase_seconds
                        WHEN 'seconds' THEN t.request_seconds
                        WHEN 'tokens' THEN t.weighted_tokens
                        ELSE error('request work of endpoint ' || t.cluster || '/'
                                   || t.namespace || '/' || t.model || ' at '
                                   || t.work_start::VARCHAR || ': its tenants have no measure '
                                   || 'in common (prefill and decode seconds, request seconds '
                                   || 'or input and output tokens); fix the request sources')
           END AS request_work
    FROM tenant_work t
    JOIN basis b USING (cluster, namespace, model, work_start)
),
shared AS (
    SELECT s.*, w.request_tenant, w.request_work,
           sum(w.request_work) OVER (PARTITION BY s.sample_id) AS total_request_work
    FROM staged s
    LEFT JOIN (SELECT * FROM work WHERE request_work > 0) w
      ON s.cluster = w.cluster AND s.namespace = w.namespace AND s.model = w.model
     AND s.window_start >= w.work_start AND s.window_start < w.work_end
    WHERE s.tenant = '__shared__'
),
apportioned AS (
    SELECT * EXCLUDE (request_tenant, request_work, total_request_work) REPLACE (
               CASE WHEN request_tenant IS NULL THEN sample_id
                    ELSE sample_id || ':' || request_tenant END AS sample_id,
               coalesce(request_tenant, '__shared_idle__') AS tenant,
               CASE WHEN request_tenant IS NULL THEN 'idle' ELSE workload_kind END
                   AS workload_kind,
               allocated_gpu_seconds * coalesce(request_work / total_request_work, 1)
                   AS allocated_gpu_seconds,
               used_gpu_seconds * coalesce(request_work / total_request_work, 1)
                   AS used_gpu_seconds,
               (memory_used_bytes * coalesce(request_work / total_request_work, 1))::BIGINT
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
JOIN size_map s ON s.model_params_b IS NOT DISTINCT FROM e.model_params_b
