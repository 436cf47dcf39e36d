-- Webhooks: endpoints per organization; an outbox of events, each written in the transaction
-- of the change that caused it together with one delivery per subscribed endpoint; a delivery
-- keeps its id across attempts and is marked delivered only after the receiver's 2xx.
-- AUTOINCREMENT: a seq is never reused after a delete, so a late outcome of an attempt cannot
-- land on a newer delivery (or endpoint) that took the same number.
CREATE TABLE webhooks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    url TEXT NOT NULL,
    -- A JSON array of event names; "*" subscribes to every event.
    events TEXT NOT NULL,
    description TEXT,
    active INTEGER NOT NULL DEFAULT 1,
    secret TEXT NOT NULL,
    -- After a rotation the old secret signs too, until `previous_secret_until` (RFC 3339).
    previous_secret TEXT,
    previous_secret_until TEXT,
    -- Set at the first failed attempt after a success; an endpoint failing for long enough is
    -- turned off with a reason.
    failing_since_ms INTEGER,
    disabled_reason TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX webhooks_org ON webhooks(org_id, seq);

CREATE TABLE webhook_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    event TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX webhook_events_age ON webhook_events(created_ms);

CREATE TABLE webhook_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    webhook_seq INTEGER NOT NULL REFERENCES webhooks(seq) ON DELETE CASCADE,
    event_seq INTEGER NOT NULL REFERENCES webhook_events(seq) ON DELETE CASCADE,
    -- pending | delivered | failed
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    -- When the next attempt is due (Unix ms).
    next_ms INTEGER NOT NULL,
    -- Held by this process's dispatcher while an attempt is in flight; cleared at start-up.
    leased INTEGER NOT NULL DEFAULT 0,
    response_code INTEGER,
    latency_ms INTEGER,
    error TEXT,
    response_body TEXT,
    redelivery_of TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    delivered_at TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_ms) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_seq, seq);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries(event_seq);
