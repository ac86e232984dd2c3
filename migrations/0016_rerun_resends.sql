-- Re-run requests proctor sent again because no re-run verdict came within
-- `pipeline.rerun_owed_after_secs` of the screen verdict that drew the job: the broker
-- acknowledged the first request and lost it (a restarted tansu rewrites its log), or
-- the rerun worker never got to it. The publisher sends a job again at most
-- `pipeline.rerun_resends` times, one bound apart; the row says how often and when last.
CREATE TABLE rerun_resends (
    job_id     TEXT PRIMARY KEY REFERENCES jobs (job_id),
    resends    INTEGER NOT NULL,
    resent_at  TIMESTAMPTZ NOT NULL
);
