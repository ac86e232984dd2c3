-- Ledger amounts in exact integer micro-points (whole millionths of a point), in the
-- tables and in version 2 of the ledger events (`points::MicroPoints`). Version 1
-- carried them as floating-point points.
--
-- Events already signed as version 1 cannot be re-signed here: drain the outbox (let
-- the publisher publish every event) before upgrading.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM outbox WHERE published_at IS NULL) THEN
        RAISE EXCEPTION 'the outbox holds unpublished version 1 events: let the publisher drain it, then upgrade';
    END IF;
END $$;

ALTER TABLE slashes RENAME COLUMN amount_waifu TO amount_waifu_micro;
ALTER TABLE slashes RENAME COLUMN amount_llama TO amount_llama_micro;
ALTER TABLE slashes
    ALTER COLUMN amount_waifu_micro TYPE BIGINT USING round(amount_waifu_micro * 1000000)::bigint,
    ALTER COLUMN amount_llama_micro TYPE BIGINT USING round(amount_llama_micro * 1000000)::bigint;
ALTER TABLE slashes ADD CONSTRAINT slashes_amount_not_negative
    CHECK (amount_waifu_micro >= 0 AND amount_llama_micro >= 0);

ALTER TABLE review_cases RENAME COLUMN at_stake_waifu TO at_stake_waifu_micro;
ALTER TABLE review_cases RENAME COLUMN at_stake_llama TO at_stake_llama_micro;
ALTER TABLE review_cases
    ALTER COLUMN at_stake_waifu_micro TYPE BIGINT USING round(at_stake_waifu_micro * 1000000)::bigint,
    ALTER COLUMN at_stake_llama_micro TYPE BIGINT USING round(at_stake_llama_micro * 1000000)::bigint;

-- The JSON copies of the amounts that are read back (a slash's body, the decision of a
-- case, a flag or a shadow decision). The audit log keeps what it recorded: it is
-- hash-chained history.
CREATE FUNCTION pg_temp.micro(amount jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(amount) = 'object' AND amount ? 'waifu' THEN
        jsonb_build_object(
            'waifu_micro', round((amount->>'waifu')::numeric * 1000000)::bigint,
            'llama_micro', round((amount->>'llama')::numeric * 1000000)::bigint)
    ELSE amount END
$$;
CREATE FUNCTION pg_temp.decision(d jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN jsonb_typeof(d->'confirmation') = 'object' THEN
            jsonb_set(x, '{confirmation,amount}', pg_temp.micro(d->'confirmation'->'amount'))
        ELSE x END
    FROM (SELECT CASE WHEN jsonb_typeof(d->'slash') = 'object' THEN
                     jsonb_set(d, '{slash,amount}', pg_temp.micro(d->'slash'->'amount'))
                 ELSE d END AS x) AS s
$$;

UPDATE slashes SET body = jsonb_set(body, '{amount}', pg_temp.micro(body->'amount'))
    WHERE body ? 'amount';
UPDATE review_cases SET decision = pg_temp.decision(decision);
UPDATE review_flags SET body = pg_temp.decision(body);
UPDATE shadow_decisions SET body = pg_temp.decision(body);
