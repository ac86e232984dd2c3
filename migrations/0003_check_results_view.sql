-- Check outcomes were written twice: in each verdict's body and again as one
-- check_results row per check, with its own index entry and foreign-key trigger. On
-- the screen worker's LLM path that second copy was most of the Postgres time
-- (measured with scripts/bench-pipeline). The verdict body is now the one copy, and
-- check_results is a view over it that keeps every outcome addressable by
-- (job, stage, check) for staff review.
DROP TABLE check_results;

CREATE VIEW check_results AS
SELECT v.job_id,
       v.stage,
       c->>'check'    AS check_id,
       c->>'status'   AS status,
       c - 'check'    AS outcome
FROM verdicts v
CROSS JOIN LATERAL jsonb_array_elements(v.body->'checks') AS c;
