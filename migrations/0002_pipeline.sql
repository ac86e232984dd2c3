-- The pipeline workers (screen, rerun, judge, publish).

-- The judge waits until a miner's evidence settles: `since` is the latest change,
-- `first_since` the first change not yet judged, and `version` counts changes, so a
-- judge removes the entry only if nothing changed while it decided.
ALTER TABLE judge_queue ADD COLUMN first_since TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE judge_queue ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- NFTs held per wallet, kept by the network's wallet service; the judge reads them for
-- the boost a slash takes back. A wallet without a row holds none.
CREATE TABLE wallet_nfts (
    wallet      TEXT PRIMARY KEY,
    nfts        INTEGER NOT NULL CHECK (nfts >= 0),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Sampled jobs whose reference re-run has not been recorded yet hold their miner's
-- judgement back (up to the judge's maximum wait).
CREATE INDEX verdicts_sampled_screen ON verdicts (miner_id) WHERE stage = 'screen' AND sampled;

-- Failed check outcomes recorded per miner (both stages): the sampler's risk input,
-- kept as a counter so that reading it costs the same however many jobs a miner has.
CREATE TABLE miner_risk (
    miner_id       TEXT PRIMARY KEY,
    failed_checks  BIGINT NOT NULL DEFAULT 0
);
