-- A run's documents counted by (status, cursor, error phase), kept by triggers on every change
-- of a document row, so a run's progress reads a handful of rows instead of an index entry per
-- document (O(1) in the run's size; progress is polled while the writer is busiest).
-- error_phase is -1 where the document has none (a primary key column cannot hold NULL usefully).
CREATE TABLE pipeline_status_counts (
    pipeline_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    cursor      INTEGER NOT NULL,
    error_phase INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (pipeline_id, status, cursor, error_phase)
) WITHOUT ROWID;

INSERT INTO pipeline_status_counts(pipeline_id, status, cursor, error_phase, count)
SELECT pipeline_id, status, cursor, coalesce(error_phase_index, -1), count(*)
FROM pipeline_documents GROUP BY 1, 2, 3, 4;

CREATE TRIGGER pipeline_status_counts_insert AFTER INSERT ON pipeline_documents BEGIN
    INSERT INTO pipeline_status_counts(pipeline_id, status, cursor, error_phase, count)
    VALUES (NEW.pipeline_id, NEW.status, NEW.cursor, coalesce(NEW.error_phase_index, -1), 1)
    ON CONFLICT DO UPDATE SET count = count + 1;
END;

CREATE TRIGGER pipeline_status_counts_update AFTER UPDATE OF status, cursor, error_phase_index ON pipeline_documents
WHEN OLD.status IS NOT NEW.status OR OLD.cursor IS NOT NEW.cursor
  OR OLD.error_phase_index IS NOT NEW.error_phase_index BEGIN
    UPDATE pipeline_status_counts SET count = count - 1
    WHERE pipeline_id = OLD.pipeline_id AND status = OLD.status AND cursor = OLD.cursor
      AND error_phase = coalesce(OLD.error_phase_index, -1);
    INSERT INTO pipeline_status_counts(pipeline_id, status, cursor, error_phase, count)
    VALUES (NEW.pipeline_id, NEW.status, NEW.cursor, coalesce(NEW.error_phase_index, -1), 1)
    ON CONFLICT DO UPDATE SET count = count + 1;
END;

CREATE TRIGGER pipeline_status_counts_delete AFTER DELETE ON pipeline_documents BEGIN
    UPDATE pipeline_status_counts SET count = count - 1
    WHERE pipeline_id = OLD.pipeline_id AND status = OLD.status AND cursor = OLD.cursor
      AND error_phase = coalesce(OLD.error_phase_index, -1);
END;
