-- Shadow mode (`pipeline.shadow = true`): the judge decides as it would live and
-- records here what it would have done, and nothing else: no slash, no review flag,
-- no outbox event. One row per decision id (the slash's or the flag's, both
-- deterministic), so re-deciding the same evidence adds nothing.
CREATE TABLE shadow_decisions (
    decision_id         TEXT PRIMARY KEY,
    miner_id            TEXT NOT NULL,
    action              TEXT NOT NULL CHECK (action IN ('flag_for_review', 'slash')),
    honest_probability  DOUBLE PRECISION NOT NULL,
    review_probability  DOUBLE PRECISION NOT NULL,
    body                JSONB NOT NULL,
    decided_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX shadow_decisions_by_miner ON shadow_decisions (miner_id, decided_at);
