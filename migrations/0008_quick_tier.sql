-- The quick tier (Talonic's /v1/extract, /v1/jobs): extractions and jobs are runs of a fixed
-- rail, told apart from governed pipelines by `kind`; a schema given inline to an extraction
-- is kept, hidden from the schema list, so the run has a spec like any other.
ALTER TABLE pipelines ADD COLUMN kind TEXT NOT NULL DEFAULT 'pipeline';
ALTER TABLE pipelines ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
CREATE INDEX pipelines_kind ON pipelines(org_id, kind, seq);
ALTER TABLE schemas ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;
-- Every key that existed before the `extract` scope may extract, as new keys may.
UPDATE api_keys SET scopes = scopes || ',extract' WHERE ',' || scopes || ',' NOT LIKE '%,extract,%';
CREATE INDEX schemas_short ON schemas(org_id, short_id);
