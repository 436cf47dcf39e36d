-- A rerun of a whole run no longer rewrites every document in its call (issue 20): it records
-- the new generation and its start on the run, and the executor's writer resets each document
-- as it reaches it. Until then a document of an older generation is "pending": every reader
-- sees it through the view below exactly as the reset would leave it.

-- The run's open lazy reset: documents of a generation below `lazy_generation` restart at
-- `lazy_from` (an error document at its error phase when earlier), as of `lazy_at`.
ALTER TABLE pipelines ADD COLUMN lazy_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pipelines ADD COLUMN lazy_from INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pipelines ADD COLUMN lazy_at TEXT;
-- Set while some document is still pending, so the writer finds work without a scan.
ALTER TABLE pipelines ADD COLUMN lazy_pending INTEGER NOT NULL DEFAULT 0;
CREATE INDEX pipelines_lazy_pending ON pipelines(seq) WHERE lazy_pending = 1;

-- The stored rows; writers write here. Readers read `pipeline_documents` (the view).
ALTER TABLE pipeline_documents RENAME TO pipeline_docs;
CREATE INDEX pipeline_docs_generation ON pipeline_docs(pipeline_id, generation);
-- Documents whose states keep something through any restart (a pin, guards, a reopen, a
-- superseded pass, a review time: what review leaves): a whole-run rerun resets these in its
-- call, found through this index instead of by reading every document's states.
CREATE INDEX pipeline_docs_sticky ON pipeline_docs(pipeline_id, seq)
WHERE instr(field_states, '"pinned":true') > 0 OR instr(field_states, '"guards"') > 0
   OR instr(field_states, '"reopened_after"') > 0 OR instr(field_states, '"resumed"') > 0
   OR instr(field_states, '"review_at"') > 0;

-- Flags survive a restart only when their gate lies before it, so a rerun needs a document's
-- lowest flag phase, not the flags: kept by a trigger that only flagged states pay for.
ALTER TABLE pipeline_docs ADD COLUMN flag_phase INTEGER;
UPDATE pipeline_docs SET flag_phase = (
    SELECT min(json_extract(f.value, '$.phase')) FROM json_each(field_states) s, json_each(s.value, '$.flags') f)
WHERE instr(field_states, '"flags"') > 0;
CREATE INDEX pipeline_docs_flagged ON pipeline_docs(pipeline_id, flag_phase) WHERE flag_phase IS NOT NULL;
CREATE TRIGGER pipeline_docs_flag_phase AFTER UPDATE OF field_states ON pipeline_docs
WHEN instr(NEW.field_states, '"flags"') > 0 OR OLD.flag_phase IS NOT NULL BEGIN
    UPDATE pipeline_docs SET flag_phase = (
        SELECT min(json_extract(f.value, '$.phase')) FROM json_each(NEW.field_states) s, json_each(s.value, '$.flags') f)
    WHERE seq = NEW.seq;
END;

-- The phase of the gate that holds a field, so a rerun finds the holds before its start (which
-- it keeps) from the review index alone.
ALTER TABLE held_fields ADD COLUMN blocked_at INTEGER;
UPDATE held_fields SET blocked_at = (
    SELECT json_extract(pd.field_states, '$."' || held_fields.field_key || '".blocked_at')
    FROM pipeline_docs pd WHERE pd.seq = held_fields.pd_seq);

-- Status counts gain the generation, so progress can count a pending document as queued.
DROP TRIGGER pipeline_status_counts_insert;
DROP TRIGGER pipeline_status_counts_update;
DROP TRIGGER pipeline_status_counts_delete;
DROP TABLE pipeline_status_counts;
CREATE TABLE pipeline_status_counts (
    pipeline_id TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    status      TEXT NOT NULL,
    cursor      INTEGER NOT NULL,
    error_phase INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (pipeline_id, generation, status, cursor, error_phase)
) WITHOUT ROWID;

INSERT INTO pipeline_status_counts(pipeline_id, generation, status, cursor, error_phase, count)
SELECT pipeline_id, generation, status, cursor, coalesce(error_phase_index, -1), count(*)
FROM pipeline_docs GROUP BY 1, 2, 3, 4, 5;

CREATE TRIGGER pipeline_status_counts_insert AFTER INSERT ON pipeline_docs BEGIN
    INSERT INTO pipeline_status_counts(pipeline_id, generation, status, cursor, error_phase, count)
    VALUES (NEW.pipeline_id, NEW.generation, NEW.status, NEW.cursor, coalesce(NEW.error_phase_index, -1), 1)
    ON CONFLICT DO UPDATE SET count = count + 1;
END;

CREATE TRIGGER pipeline_status_counts_update
AFTER UPDATE OF status, cursor, error_phase_index, generation ON pipeline_docs
WHEN OLD.status IS NOT NEW.status OR OLD.cursor IS NOT NEW.cursor
  OR OLD.error_phase_index IS NOT NEW.error_phase_index OR OLD.generation IS NOT NEW.generation BEGIN
    UPDATE pipeline_status_counts SET count = count - 1
    WHERE pipeline_id = OLD.pipeline_id AND generation = OLD.generation AND status = OLD.status
      AND cursor = OLD.cursor AND error_phase = coalesce(OLD.error_phase_index, -1);
    INSERT INTO pipeline_status_counts(pipeline_id, generation, status, cursor, error_phase, count)
    VALUES (NEW.pipeline_id, NEW.generation, NEW.status, NEW.cursor, coalesce(NEW.error_phase_index, -1), 1)
    ON CONFLICT DO UPDATE SET count = count + 1;
END;

CREATE TRIGGER pipeline_status_counts_delete AFTER DELETE ON pipeline_docs BEGIN
    UPDATE pipeline_status_counts SET count = count - 1
    WHERE pipeline_id = OLD.pipeline_id AND generation = OLD.generation AND status = OLD.status
      AND cursor = OLD.cursor AND error_phase = coalesce(OLD.error_phase_index, -1);
END;

-- Every document as readers must see it: a pending one as its reset leaves it (the same
-- columns `store::reruns::claim_pending` writes when the writer claims it).
CREATE VIEW pipeline_documents AS
SELECT pd.seq, pd.id, pd.pipeline_id, pd.document_id, pd.ordinal,
    CASE WHEN pd.generation < p.lazy_generation THEN 'queued' ELSE pd.status END AS status,
    CASE WHEN pd.generation < p.lazy_generation THEN
        CASE WHEN pd.status = 'error' THEN min(p.lazy_from, coalesce(pd.error_phase_index, 0)) ELSE p.lazy_from END
    ELSE pd.cursor END AS cursor,
    max(pd.generation, p.lazy_generation) AS generation,
    CASE WHEN pd.generation < p.lazy_generation THEN 1 ELSE pd.pass END AS pass,
    CASE WHEN pd.generation < p.lazy_generation THEN NULL ELSE pd.claim_token END AS claim_token,
    CASE WHEN pd.generation < p.lazy_generation THEN 0 ELSE pd.attempts END AS attempts,
    CASE WHEN pd.generation < p.lazy_generation THEN NULL ELSE pd.error END AS error,
    CASE WHEN pd.generation < p.lazy_generation THEN NULL ELSE pd.error_phase_index END AS error_phase_index,
    CASE WHEN pd.generation < p.lazy_generation THEN
        json_insert(pd.restarts, '$[#]', json_array(p.lazy_generation,
            CASE WHEN pd.status = 'error' THEN min(p.lazy_from, coalesce(pd.error_phase_index, 0)) ELSE p.lazy_from END))
    ELSE pd.restarts END AS restarts,
    CASE WHEN pd.generation < p.lazy_generation THEN '{}' ELSE pd.field_states END AS field_states,
    pd.created_at,
    CASE WHEN pd.generation < p.lazy_generation THEN p.lazy_at ELSE pd.updated_at END AS updated_at,
    CASE WHEN pd.generation < p.lazy_generation THEN NULL ELSE pd.completed_at END AS completed_at,
    pd.unclean_exits, pd.abort_cause,
    CASE WHEN pd.generation < p.lazy_generation THEN NULL ELSE pd.waiting_for END AS waiting_for
FROM pipeline_docs pd JOIN pipelines p ON p.id = pd.pipeline_id;
