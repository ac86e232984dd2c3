-- How each case action was taken: the channel (web, api, cli, judge) and the login
-- session or API token behind it (review::Via). The audit log carries the same in
-- each entry's detail, under its chain hash. Actions from before this migration have
-- none.
ALTER TABLE case_actions ADD COLUMN via JSONB;
