-- A run's held fields counted by routing, kept by triggers on every insert and delete of a
-- review row (rows are never updated in place), so a results page's `pending_review_count`
-- reads one row instead of an index entry per held field: at a million documents with
-- 20,000 held, counting the index was 44% of each results page (issue 20).
-- `hold` is 1 for `routing = 'hold'`, 0 otherwise, as the queue's `hold` filter splits them.
CREATE TABLE held_counts (
    pipeline_id TEXT NOT NULL,
    hold        INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (pipeline_id, hold)
) WITHOUT ROWID;

INSERT INTO held_counts(pipeline_id, hold, count)
SELECT pipeline_id, routing = 'hold', count(*) FROM held_fields GROUP BY 1, 2;

CREATE TRIGGER held_counts_insert AFTER INSERT ON held_fields BEGIN
    INSERT INTO held_counts(pipeline_id, hold, count)
    VALUES (NEW.pipeline_id, NEW.routing = 'hold', 1)
    ON CONFLICT DO UPDATE SET count = count + 1;
END;

CREATE TRIGGER held_counts_delete AFTER DELETE ON held_fields BEGIN
    UPDATE held_counts SET count = count - 1
    WHERE pipeline_id = OLD.pipeline_id AND hold = (OLD.routing = 'hold');
END;

-- The counts hold only while a row's run and routing never change.
CREATE TRIGGER held_fields_fixed_count BEFORE UPDATE OF pipeline_id, routing ON held_fields
WHEN OLD.pipeline_id IS NOT NEW.pipeline_id OR OLD.routing IS NOT NEW.routing BEGIN
    SELECT RAISE(ABORT, 'a review row''s run and routing are fixed: delete it and insert another');
END;

-- A whole-run rerun's call looks for the review rows blocked before its restart phase (or with
-- no blocking phase): by range on this index, not by reading every review row of the run.
-- `held_fields_pipeline` stays: the writer's chunks of stale rows rely on its insertion order.
CREATE INDEX held_fields_blocked ON held_fields(pipeline_id, blocked_at);
