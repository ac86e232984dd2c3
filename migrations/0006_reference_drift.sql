-- Reference-vs-reference drift: a share of re-run jobs runs on two reference hosts (and
-- on a third when those two disagree), and each comparison of two hosts' outputs for the
-- same job is kept here. Rows within the honest envelope are the measured cross-GPU
-- drift the image and LLM thresholds must tolerate; rows beyond it are a drifting host.
-- A redelivered job compares again; its first comparison per host pair is kept.
CREATE TABLE reference_drift (
    job_id      text        NOT NULL,
    model_id    text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('image', 'scores', 'mixed')),
    host_a      text        NOT NULL,
    host_b      text        NOT NULL,
    within      boolean     NOT NULL,
    measures    jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, host_a, host_b)
);
CREATE INDEX reference_drift_hosts ON reference_drift (host_a, host_b, recorded_at);
