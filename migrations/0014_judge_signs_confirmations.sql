-- The review app holds no key that can create a slash. A reviewer's confirmation moves
-- a case to `confirming` and records the slash they saw (`pending_slash_id`, with the
-- amount at stake); the judge, which holds the slash key, signs that slash if its own
-- decision on the evidence yields the same, and the case becomes `confirmed`. Else the
-- case goes back to `open` (the audit log says why).
ALTER TABLE review_cases DROP CONSTRAINT review_cases_status_check;
ALTER TABLE review_cases ADD CONSTRAINT review_cases_status_check CHECK (status IN
    ('open', 'confirming', 'confirmed', 'dismissed', 'slashed', 'appealed', 'upheld',
     'reversed'));
ALTER TABLE review_cases ADD COLUMN pending_slash_id TEXT;
ALTER TABLE review_cases ADD CONSTRAINT review_cases_confirming_names_a_slash
    CHECK ((status = 'confirming') = (pending_slash_id IS NOT NULL));
CREATE INDEX review_cases_confirming ON review_cases (miner_id) WHERE status = 'confirming';
