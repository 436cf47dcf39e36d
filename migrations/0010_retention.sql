-- Retention: versions and verdicts of superseded generations may be purged, by `quire purge`
-- or by an organization's setting; nothing else may remove a version.
-- How long an organization keeps versions a rerun superseded (NULL: for ever).
ALTER TABLE organizations ADD COLUMN retain_superseded_days INTEGER;

-- A purge opens this window inside its own transaction and closes it before committing, so the
-- window is never seen open by any other transaction, and a crash rolls it back with the purge.
CREATE TABLE purge_window (open INTEGER PRIMARY KEY CHECK (open = 1));

-- Cells stay append-only. The one exception: inside a purge window, a machine version (never a
-- person's) that a later generation's restart superseded, which no reader can show again.
DROP TRIGGER cells_no_delete;
CREATE TRIGGER cells_no_delete BEFORE DELETE ON cells
WHEN NOT EXISTS (SELECT 1 FROM purge_window)
  OR OLD.source = 'human_review'
  OR NOT EXISTS (
    SELECT 1 FROM pipeline_documents pd, json_each(pd.restarts) r
    WHERE pd.seq = OLD.pd_seq
      AND json_extract(r.value, '$[0]') > OLD.generation
      AND OLD.phase_index >= json_extract(r.value, '$[1]'))
BEGIN
    SELECT RAISE(ABORT, 'cells are append-only: only a purge removes versions of superseded generations');
END;
