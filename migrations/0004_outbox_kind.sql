-- The outbox names what an event is, not where it goes: the publisher maps the kind to
-- its topic from the settings (`kafka.slashes_topic`), so a deployment that renames the
-- topic publishes every stored event there, and no row holds a topic name that the
-- publisher has to rewrite.
ALTER TABLE outbox RENAME COLUMN topic TO kind;
UPDATE outbox SET kind = 'slash' WHERE kind = 'ledger.slashes';
ALTER TABLE outbox ADD CONSTRAINT outbox_kind_known CHECK (kind IN ('slash'));
