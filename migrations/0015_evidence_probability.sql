-- A flag's row held its review probability (the tail at the checks' measured rates)
-- in a column named `honest_probability`, which on a slash is a different number (the
-- tail at the slash rate, times the slashing tests). Each column now says what it holds:
-- a flag's is `review_probability`; a case's, which holds whichever opened or last
-- updated it, is `evidence_probability`. Slashes keep `honest_probability`: it is one.
ALTER TABLE review_flags RENAME COLUMN honest_probability TO review_probability;
ALTER TABLE review_cases RENAME COLUMN honest_probability TO evidence_probability;
