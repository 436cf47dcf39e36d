-- A whole-run rerun no longer deletes, in its call, the review rows of the documents it leaves
-- to the writer: that made the call O(held fields) (766 ms at a million documents, issue 20).
-- It sets this mark instead; the writer deletes a claimed document's rows in its claim and the
-- rest in bounded chunks, and clears the mark when none is left. Until then every reader of the
-- review index skips a row whose document is pending (its generation below the run's
-- `lazy_generation`): the view shows such a document with no field held.
ALTER TABLE pipelines ADD COLUMN lazy_held INTEGER NOT NULL DEFAULT 0;
-- The runs that may still have such rows, for the counts that subtract them.
CREATE INDEX pipelines_lazy_held ON pipelines(seq) WHERE lazy_held = 1;
