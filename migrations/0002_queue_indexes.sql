-- The claim asks for `status = 'queued' ORDER BY seq`; SQLite only uses a partial index whose
-- WHERE the query implies, and an IN list is not implied by an equality, so the old queue index
-- was never used and every claim scanned the table from its first row (quadratic in a rerun).
DROP INDEX pipeline_documents_queue;
CREATE INDEX pipeline_documents_queued ON pipeline_documents(seq) WHERE status = 'queued';
CREATE INDEX pipeline_documents_processing ON pipeline_documents(seq) WHERE status = 'processing';
-- Versions written by an open rerun, counted as the executor commits them.
ALTER TABLE reruns ADD COLUMN versions_written INTEGER NOT NULL DEFAULT 0;
