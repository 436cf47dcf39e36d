CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE organizations (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE api_keys (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    org_id     TEXT NOT NULL REFERENCES organizations(id),
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    key_hash   BLOB NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    rate_limit INTEGER,
    expires_at TEXT,
    revoked_at TEXT,
    bootstrap  INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX api_keys_org ON api_keys(org_id);

-- Every change to api_keys bumps a counter, so the service's key cache can tell a key change
-- (made by the CLI from another process) from any other commit.
INSERT INTO settings(key, value) VALUES ('keys_epoch', '0');
CREATE TRIGGER api_keys_epoch_ins AFTER INSERT ON api_keys BEGIN
    UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'keys_epoch'; END;
CREATE TRIGGER api_keys_epoch_upd AFTER UPDATE ON api_keys BEGIN
    UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'keys_epoch'; END;
CREATE TRIGGER api_keys_epoch_del AFTER DELETE ON api_keys BEGIN
    UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'keys_epoch'; END;

CREATE TABLE schemas (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    short_id    TEXT NOT NULL,
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    name        TEXT NOT NULL,
    description TEXT,
    definition  TEXT NOT NULL,
    fields      TEXT NOT NULL,
    version     INTEGER NOT NULL DEFAULT 1,
    rail        TEXT NOT NULL DEFAULT '[]',
    deleted_at  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX schemas_org ON schemas(org_id, seq);

CREATE TABLE registry_fields (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    org_id           TEXT NOT NULL REFERENCES organizations(id),
    canonical_name   TEXT NOT NULL,
    display_name     TEXT NOT NULL,
    data_type        TEXT NOT NULL,
    synonyms         TEXT NOT NULL DEFAULT '[]',
    occurrence_count INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    UNIQUE (org_id, canonical_name)
);
CREATE INDEX registry_fields_org ON registry_fields(org_id, seq);

CREATE TABLE documents (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    filename    TEXT NOT NULL,
    mime_type   TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    content     BLOB NOT NULL,
    deleted_at  TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX documents_org ON documents(org_id, seq);
CREATE INDEX documents_sha ON documents(org_id, sha256);

CREATE TABLE validation_stages (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    org_id          TEXT NOT NULL REFERENCES organizations(id),
    schema_id       TEXT NOT NULL REFERENCES schemas(id),
    name            TEXT NOT NULL,
    ordinal         INTEGER NOT NULL,
    severity        TEXT NOT NULL,
    field_scope     TEXT NOT NULL DEFAULT '[]',
    mechanisms      TEXT NOT NULL DEFAULT '[]',
    blocking_config TEXT NOT NULL,
    version         INTEGER NOT NULL DEFAULT 1,
    deleted_at      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX validation_stages_schema ON validation_stages(schema_id, ordinal);
CREATE INDEX validation_stages_org ON validation_stages(org_id);

CREATE TABLE data_policies (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    name        TEXT NOT NULL,
    description TEXT,
    version     INTEGER NOT NULL DEFAULT 1,
    deleted_at  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX data_policies_org ON data_policies(org_id, seq);

CREATE TABLE policy_fields (
    policy_id  TEXT NOT NULL REFERENCES data_policies(id),
    field_key  TEXT NOT NULL,
    type       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (policy_id, field_key)
) WITHOUT ROWID;

CREATE TABLE policy_rules (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    policy_id  TEXT NOT NULL REFERENCES data_policies(id),
    field_key  TEXT NOT NULL,
    rule_type  TEXT NOT NULL,
    config     TEXT NOT NULL,
    ord        INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX policy_rules_policy ON policy_rules(policy_id, ord);

CREATE TABLE pipelines (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    org_id         TEXT NOT NULL REFERENCES organizations(id),
    schema_id      TEXT NOT NULL REFERENCES schemas(id),
    schema_name    TEXT NOT NULL,
    name           TEXT NOT NULL,
    status         TEXT NOT NULL,
    generation     INTEGER NOT NULL DEFAULT 1,
    fields         TEXT NOT NULL,
    phase_count    INTEGER NOT NULL,
    document_count INTEGER NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    completed_at   TEXT
);
CREATE INDEX pipelines_org ON pipelines(org_id, seq);
CREATE INDEX pipelines_schema ON pipelines(schema_id);
CREATE INDEX pipelines_status ON pipelines(org_id, status);

CREATE TABLE pipeline_phases (
    pipeline_id TEXT NOT NULL REFERENCES pipelines(id),
    idx         INTEGER NOT NULL,
    phase_id    TEXT NOT NULL,
    type        TEXT NOT NULL,
    name        TEXT NOT NULL,
    ref_id      TEXT,
    PRIMARY KEY (pipeline_id, idx)
) WITHOUT ROWID;

-- Snapshot history of each phase's policy or gate; a document of generation g uses the newest
-- snapshot taken at a generation <= g.
CREATE TABLE phase_snapshots (
    pipeline_id    TEXT NOT NULL REFERENCES pipelines(id),
    idx            INTEGER NOT NULL,
    config_version INTEGER NOT NULL,
    generation     INTEGER NOT NULL,
    config         TEXT NOT NULL,
    PRIMARY KEY (pipeline_id, idx, config_version)
) WITHOUT ROWID;

CREATE TABLE pipeline_documents (
    seq               INTEGER PRIMARY KEY,
    id                TEXT NOT NULL UNIQUE,
    pipeline_id       TEXT NOT NULL REFERENCES pipelines(id),
    document_id       TEXT NOT NULL REFERENCES documents(id),
    ordinal           INTEGER NOT NULL,
    status            TEXT NOT NULL,
    cursor            INTEGER NOT NULL DEFAULT 0,
    generation        INTEGER NOT NULL DEFAULT 1,
    pass              INTEGER NOT NULL DEFAULT 1,
    claim_token       TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    error             TEXT,
    error_phase_index INTEGER,
    restarts          TEXT NOT NULL DEFAULT '[]',
    field_states      TEXT NOT NULL DEFAULT '{}',
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    completed_at      TEXT
);
CREATE INDEX pipeline_documents_run ON pipeline_documents(pipeline_id, ordinal);
CREATE INDEX pipeline_documents_status ON pipeline_documents(pipeline_id, status, cursor, error_phase_index);
CREATE INDEX pipeline_documents_document ON pipeline_documents(document_id);
CREATE INDEX pipeline_documents_queue ON pipeline_documents(status) WHERE status IN ('queued', 'processing');

CREATE TABLE cells (
    seq            INTEGER PRIMARY KEY,
    pd_seq         INTEGER NOT NULL REFERENCES pipeline_documents(seq),
    field_key      TEXT NOT NULL,
    version        INTEGER NOT NULL,
    value          TEXT,
    source         TEXT NOT NULL,
    phase_index    INTEGER NOT NULL,
    generation     INTEGER NOT NULL,
    pass           INTEGER NOT NULL,
    confidence     REAL,
    source_text    TEXT,
    config_version INTEGER,
    rule_type      TEXT,
    note           TEXT,
    created_at     TEXT NOT NULL
);
CREATE INDEX cells_pd ON cells(pd_seq, field_key, version);
CREATE TRIGGER cells_no_update BEFORE UPDATE ON cells BEGIN
    SELECT RAISE(ABORT, 'cells are append-only'); END;
CREATE TRIGGER cells_no_delete BEFORE DELETE ON cells BEGIN
    SELECT RAISE(ABORT, 'cells are append-only'); END;

CREATE TABLE verdicts (
    seq         INTEGER PRIMARY KEY,
    pd_seq      INTEGER NOT NULL REFERENCES pipeline_documents(seq),
    field_key   TEXT NOT NULL,
    phase_index INTEGER NOT NULL,
    stage_id    TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    pass        INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    suppressed  INTEGER NOT NULL DEFAULT 0,
    reason      TEXT,
    mechanisms  TEXT NOT NULL,
    value_hash  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX verdicts_pd ON verdicts(pd_seq, phase_index, field_key);

CREATE TABLE review_decisions (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    org_id          TEXT NOT NULL REFERENCES organizations(id),
    pipeline_id     TEXT NOT NULL REFERENCES pipelines(id),
    pd_seq          INTEGER NOT NULL REFERENCES pipeline_documents(seq),
    field_key       TEXT NOT NULL,
    trigger_type    TEXT NOT NULL,
    stage_id        TEXT,
    stage_name      TEXT,
    phase_index     INTEGER,
    action          TEXT NOT NULL,
    prior_value     TEXT,
    final_value     TEXT,
    reason          TEXT,
    decided_by      TEXT NOT NULL,
    decided_by_name TEXT NOT NULL,
    decided_at      TEXT NOT NULL
);
CREATE INDEX review_decisions_org ON review_decisions(org_id, seq);
CREATE INDEX review_decisions_pipeline ON review_decisions(pipeline_id, seq);
CREATE INDEX review_decisions_pd ON review_decisions(pd_seq, field_key);
CREATE TRIGGER review_decisions_no_update BEFORE UPDATE ON review_decisions BEGIN
    SELECT RAISE(ABORT, 'the decision log is append-only'); END;
CREATE TRIGGER review_decisions_no_delete BEFORE DELETE ON review_decisions BEGIN
    SELECT RAISE(ABORT, 'the decision log is append-only'); END;

-- Held fields (blocked or pending review), kept in step with field_states for the review queue.
CREATE TABLE held_fields (
    seq          INTEGER PRIMARY KEY,
    pd_seq       INTEGER NOT NULL REFERENCES pipeline_documents(seq),
    field_key    TEXT NOT NULL,
    org_id       TEXT NOT NULL,
    pipeline_id  TEXT NOT NULL,
    status       TEXT NOT NULL,
    trigger_type TEXT NOT NULL,
    routing      TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    UNIQUE (pd_seq, field_key)
);
CREATE INDEX held_fields_org ON held_fields(org_id, seq);
CREATE INDEX held_fields_pipeline ON held_fields(pipeline_id);

CREATE TABLE reruns (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    pipeline_id      TEXT NOT NULL REFERENCES pipelines(id),
    generation       INTEGER NOT NULL,
    from_phase       TEXT NOT NULL,
    from_phase_index INTEGER NOT NULL,
    enqueued         INTEGER NOT NULL,
    document_ids     TEXT,
    requested_at     TEXT NOT NULL,
    requested_by     TEXT NOT NULL,
    finished_at      TEXT,
    outcome          TEXT
);
CREATE INDEX reruns_pipeline ON reruns(pipeline_id, seq);

CREATE TABLE record_sets (
    pipeline_id TEXT PRIMARY KEY REFERENCES pipelines(id),
    created_at  TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE data_products (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    pipeline_id TEXT NOT NULL UNIQUE REFERENCES pipelines(id),
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX data_products_org ON data_products(org_id, seq);

CREATE TABLE idempotency_keys (
    org_id          TEXT NOT NULL,
    key             TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    state           TEXT NOT NULL,
    response_status INTEGER,
    content_type    TEXT,
    body            BLOB,
    started_at      TEXT NOT NULL,
    started_ms      INTEGER NOT NULL,
    PRIMARY KEY (org_id, key)
) WITHOUT ROWID;
