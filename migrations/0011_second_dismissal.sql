-- A flag whose stake is above `slashing.second_reviewer_dismiss_above` is dismissed only
-- by two reviewers (`review::Dismissal`): the first one's dismissal is a proposal, kept
-- here while the case stays open. A new flag of the miner (other evidence) voids it, and
-- so does any move out of `open`.
ALTER TABLE review_cases ADD COLUMN dismiss_proposed_by TEXT REFERENCES staff (username);
