-- The sampler's screen failures decay (`sampling::MinerRisk`): each screened job adds
-- its screen failures and pays off its allowance (the verdict's `screen_allowance`),
-- never below zero. The count it replaces only ever grew; the failures counted so far
-- become the starting excess, to be paid off from here on.
ALTER TABLE miner_risk ADD COLUMN excess_failures DOUBLE PRECISION NOT NULL DEFAULT 0;
UPDATE miner_risk SET excess_failures = failed_checks;
ALTER TABLE miner_risk DROP COLUMN failed_checks;
