-- proctor's state. Every write is idempotent on a natural key (job_id, slash_id, ...), so
-- a redelivered message or a retried transaction changes nothing the second time.

-- Jobs as received: one row per job_id, however often its message is delivered.
CREATE TABLE jobs (
    job_id        TEXT PRIMARY KEY,
    miner_id      TEXT NOT NULL,
    model_id      TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('sd', 'llm')),
    submitted_at  TIMESTAMPTZ NOT NULL,
    record        JSONB NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX jobs_by_miner ON jobs (miner_id, submitted_at);

-- A job's judgement at one stage: 'screen' (checks that need no reference) or 'rerun'
-- (every check, with the reference output). The latest stage is the job's verdict.
CREATE TABLE verdicts (
    job_id        TEXT NOT NULL REFERENCES jobs (job_id),
    stage         TEXT NOT NULL CHECK (stage IN ('screen', 'rerun')),
    miner_id      TEXT NOT NULL,
    verdict       TEXT NOT NULL CHECK (verdict IN ('pass', 'fail', 'invalid', 'inconclusive')),
    points_waifu  DOUBLE PRECISION NOT NULL,
    points_llama  DOUBLE PRECISION NOT NULL,
    sampled       BOOLEAN NOT NULL,
    rules_digest  TEXT NOT NULL,
    body          JSONB NOT NULL,
    judged_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, stage)
);
CREATE INDEX verdicts_by_miner ON verdicts (miner_id);

-- Every check outcome with its evidence, addressable by (job, stage, check): what staff
-- review shows next to the images and token charts.
CREATE TABLE check_results (
    job_id    TEXT NOT NULL,
    stage     TEXT NOT NULL,
    check_id  TEXT NOT NULL,
    status    TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'inconclusive')),
    outcome   JSONB NOT NULL,
    PRIMARY KEY (job_id, stage, check_id),
    FOREIGN KEY (job_id, stage) REFERENCES verdicts (job_id, stage)
);

-- Miners whose evidence changed since the judge last decided on them.
CREATE TABLE judge_queue (
    miner_id  TEXT PRIMARY KEY,
    since     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE slashes (
    slash_id            TEXT PRIMARY KEY,
    miner_id            TEXT NOT NULL,
    amount_waifu        DOUBLE PRECISION NOT NULL,
    amount_llama        DOUBLE PRECISION NOT NULL,
    rule_id             TEXT NOT NULL,
    honest_probability  DOUBLE PRECISION NOT NULL,
    rules_digest        TEXT NOT NULL,
    body                JSONB NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX slashes_by_miner ON slashes (miner_id);

-- A job is covered by at most one slash: this primary key is the "exactly once".
CREATE TABLE slashed_jobs (
    job_id    TEXT PRIMARY KEY REFERENCES jobs (job_id),
    slash_id  TEXT NOT NULL REFERENCES slashes (slash_id)
);

-- Weaker evidence, for staff to confirm or dismiss.
CREATE TABLE review_flags (
    flag_id             TEXT PRIMARY KEY,
    miner_id            TEXT NOT NULL,
    honest_probability  DOUBLE PRECISION NOT NULL,
    body                JSONB NOT NULL,
    status              TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'confirmed', 'dismissed')),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Transactional outbox: an event is written in the same transaction as its slash and
-- published afterwards, so a slash is never lost between Postgres and the broker.
CREATE TABLE outbox (
    event_id      TEXT PRIMARY KEY,
    topic         TEXT NOT NULL,
    key           TEXT NOT NULL,
    envelope      TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at  TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;
