-- Several nodes on one database (issue 23). A node is one `quire serve` incarnation: its id is
-- `name/<random>`, fresh at each start, and it holds its claims for as long as its lease (renewed
-- by a heartbeat, on the database's clock) lasts. When a lease runs out another node deletes the
-- row and takes back what the node had claimed or leased. On SQLite there is only ever one node.
CREATE TABLE nodes (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    host           TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    started_ms     INTEGER NOT NULL,
    lease_ms       INTEGER NOT NULL,
    lease_until_ms INTEGER NOT NULL
);
CREATE INDEX nodes_name ON nodes(name);

-- The node whose claim a `processing` document is, and whose dispatcher asks a model for a
-- waiting one. Not a foreign key: a reaped node's row is deleted before its claims are returned.
ALTER TABLE pipeline_docs ADD COLUMN claimed_by TEXT;
CREATE INDEX pipeline_docs_waiting ON pipeline_docs(claimed_by) WHERE waiting_for IS NOT NULL;
-- The node delivering a leased webhook delivery.
ALTER TABLE webhook_deliveries ADD COLUMN leased_by TEXT;
-- The node answering a request under an idempotency key: a marker of a node that is gone is stale.
ALTER TABLE idempotency_keys ADD COLUMN node TEXT;
