-- Staff review: accounts, API tokens, one case per miner and decision, appeals,
-- reversals, and the hash-chained audit log (docs/ARCHITECTURE.md, "Staff review").

-- Staff accounts. No account exists until `proctor staff add` creates one: there is no
-- default password.
CREATE TABLE staff (
    username       TEXT PRIMARY KEY CHECK (username ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    role           TEXT NOT NULL CHECK (role IN ('reviewer', 'admin')),
    -- Argon2id, in the PHC string format (salt and parameters included).
    password_hash  TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled_at    TIMESTAMPTZ
);

-- API tokens for the JSON API and `proctor review`. The token is shown once; only its
-- BLAKE3 hash is kept. `token_id` is the public part that names it in lists and logs.
CREATE TABLE api_tokens (
    token_id    TEXT PRIMARY KEY,
    username    TEXT NOT NULL REFERENCES staff (username),
    token_hash  TEXT NOT NULL,
    label       TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);

-- A case is what staff act on: one per miner while it is open, opened by the judge's
-- flag (status `open`) or by an automatic slash (status `slashed`). The judge's later
-- flags of the same miner update the open case instead of adding rows.
--
--   open ──confirm──> confirmed ──appeal──> appealed ──uphold──> upheld
--     └──dismiss──> dismissed          slashed ──appeal──┘  └──reverse──> reversed
CREATE TABLE review_cases (
    case_id              BIGSERIAL PRIMARY KEY,
    miner_id             TEXT NOT NULL,
    opened_by            TEXT NOT NULL CHECK (opened_by IN ('flag', 'slash')),
    status               TEXT NOT NULL CHECK (status IN
                           ('open', 'confirmed', 'dismissed', 'slashed', 'appealed',
                            'upheld', 'reversed')),
    -- The latest flag that joined the case (a flag case) and the case's slash.
    flag_id              TEXT,
    slash_id             TEXT REFERENCES slashes (slash_id),
    -- The strength of the evidence: the decision's review probability for a flag, the
    -- slash's honest probability for a slash. Lower is stronger.
    honest_probability   DOUBLE PRECISION NOT NULL,
    -- What a confirmation takes (a flag), or what the slash took.
    at_stake_waifu       DOUBLE PRECISION NOT NULL,
    at_stake_llama       DOUBLE PRECISION NOT NULL,
    -- The latest decision (`decide::Decision`) the case was opened or updated from.
    decision             JSONB NOT NULL,
    confirmed_by         TEXT REFERENCES staff (username),
    opened_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX review_cases_one_open ON review_cases (miner_id) WHERE status = 'open';
CREATE UNIQUE INDEX review_cases_by_slash ON review_cases (slash_id) WHERE slash_id IS NOT NULL;
CREATE INDEX review_cases_queue ON review_cases (status, honest_probability);

-- Each flag the judge raised joins its miner's open case; the case carries the status.
ALTER TABLE review_flags DROP COLUMN status;
ALTER TABLE review_flags ADD COLUMN case_id BIGINT REFERENCES review_cases (case_id);

-- Notes and decisions on a case, in order; the audit log holds the same, chained.
CREATE TABLE case_actions (
    action_id   BIGSERIAL PRIMARY KEY,
    case_id     BIGINT NOT NULL REFERENCES review_cases (case_id),
    username    TEXT NOT NULL REFERENCES staff (username),
    action      TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX case_actions_by_case ON case_actions (case_id, action_id);

-- A miner's appeal, filed by staff on the miner's behalf; at most one undecided per
-- case. It is decided by a reviewer other than the one who confirmed the slash and
-- the one who filed it.
CREATE TABLE appeals (
    appeal_id   BIGSERIAL PRIMARY KEY,
    case_id     BIGINT NOT NULL REFERENCES review_cases (case_id),
    filed_by    TEXT NOT NULL REFERENCES staff (username),
    statement   TEXT NOT NULL,
    filed_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    decided_by  TEXT REFERENCES staff (username),
    outcome     TEXT CHECK (outcome IN ('upheld', 'reversed')),
    reason      TEXT,
    decided_at  TIMESTAMPTZ
);
CREATE UNIQUE INDEX appeals_one_undecided ON appeals (case_id) WHERE outcome IS NULL;

-- A slash is reversed at most once. Its jobs stay in `slashed_jobs`: a reversed
-- slash's evidence never counts again, or the judge would slash the same jobs anew.
CREATE TABLE slash_reversals (
    slash_id     TEXT PRIMARY KEY REFERENCES slashes (slash_id),
    appeal_id    BIGINT NOT NULL REFERENCES appeals (appeal_id),
    reversed_by  TEXT NOT NULL REFERENCES staff (username),
    reason       TEXT NOT NULL,
    reversed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Staff decisions that move a miner's re-run draw (see `sampling::MinerRisk`):
-- confirmed flags, and a raised rate until a time after "more evidence".
ALTER TABLE miner_risk ADD COLUMN confirmed_flags BIGINT NOT NULL DEFAULT 0;
ALTER TABLE miner_risk ADD COLUMN evidence_requested_until TIMESTAMPTZ;

-- The outbox also carries reversals, to the same ledger topic.
ALTER TABLE outbox DROP CONSTRAINT outbox_kind_known;
ALTER TABLE outbox ADD CONSTRAINT outbox_kind_known CHECK (kind IN ('slash', 'slash_reversed'));

-- The audit log: every decision, note, appeal, login, logout and account change, each
-- entry carrying the BLAKE3 hash of the one before (`review::trail`). Appended under
-- a transaction-scoped advisory lock, so the chain has one order.
CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    -- The exact JSON text that was hashed (JSONB would reorder it).
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE
);

-- The review app's login sessions (tower-sessions records). Only a hash of the session
-- id is kept, so reading this table does not hand out sessions.
CREATE TABLE staff_sessions (
    id_hash     TEXT PRIMARY KEY,
    data        JSONB NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX staff_sessions_expiry ON staff_sessions (expires_at);
