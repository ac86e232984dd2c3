-- API tokens expire (`proctor staff token --days N`, at most a year; 90 days by
-- default), and one token can be revoked alone (`proctor staff revoke-token ID`, the
-- admin page). Tokens issued before expiry existed expire 90 days from this migration.
ALTER TABLE api_tokens ADD COLUMN expires_at TIMESTAMPTZ;
UPDATE api_tokens SET expires_at = now() + interval '90 days' WHERE expires_at IS NULL;
ALTER TABLE api_tokens ALTER COLUMN expires_at SET NOT NULL;
