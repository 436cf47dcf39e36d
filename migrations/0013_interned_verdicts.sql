-- Verdicts are the executor's most frequent rows. Most of a verdict was text that repeats from
-- document to document: the gate's 36-character stage id and, per mechanism, a JSON object such
-- as {"validatorType":"min_confidence","verdict":"pass","confidence":0.95,"reasoning":"confidence
-- 0.95 vs threshold 0.5"}. Such texts are now stored in `interned`, and a verdict holds their
-- integer ids (issue 20).

-- Append-only: a verdict refers to these ids, so none may change or go away (a purge leaves them).
-- No index on `text`: the executor's writer finds the ids of the texts it repeats in its own
-- cache, so every insert here lands at the end of the table. A text the cache no longer holds
-- (after a restart) is stored again under a new id; readers only ever follow ids.
CREATE TABLE interned (
    id   INTEGER PRIMARY KEY,
    text TEXT NOT NULL
);
CREATE TRIGGER interned_no_update BEFORE UPDATE ON interned BEGIN
    SELECT RAISE(ABORT, 'interned texts are append-only'); END;
CREATE TRIGGER interned_no_delete BEFORE DELETE ON interned BEGIN
    SELECT RAISE(ABORT, 'interned texts are append-only'); END;

-- Only while this migration matches the stored verdicts' texts to their ids.
CREATE INDEX interned_text_migration ON interned(text);
INSERT INTO interned(text)
SELECT t FROM (
    SELECT stage_id AS t FROM verdicts
    UNION
    SELECT e.value FROM verdicts v, json_each(v.mechanisms) e
);

-- `stage`: the interned stage id. `mechanisms`: a JSON array with, per mechanism, the id of its
-- interned object, or [id, fragment, ...] when the executor cut the values it judged out of the
-- object (the reasoning's values, the confidence) so that the rest repeats
-- (`domain::gate::mechanism_template`). The rows migrated here keep their whole objects.
CREATE TABLE verdicts_interned (
    seq         INTEGER PRIMARY KEY,
    pd_seq      INTEGER NOT NULL REFERENCES pipeline_docs(seq),
    field_key   TEXT NOT NULL,
    phase_index INTEGER NOT NULL,
    stage       INTEGER NOT NULL REFERENCES interned(id),
    generation  INTEGER NOT NULL,
    pass        INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    suppressed  INTEGER NOT NULL DEFAULT 0,
    reason      TEXT,
    mechanisms  TEXT NOT NULL,
    value_hash  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

INSERT INTO verdicts_interned(seq, pd_seq, field_key, phase_index, stage, generation, pass, outcome,
                              suppressed, reason, mechanisms, value_hash, created_at)
SELECT v.seq, v.pd_seq, v.field_key, v.phase_index,
       (SELECT i.id FROM interned i WHERE i.text = v.stage_id),
       v.generation, v.pass, v.outcome, v.suppressed, v.reason,
       '[' || coalesce((SELECT group_concat(i.id, ',' ORDER BY e.key) FROM json_each(v.mechanisms) e
                        JOIN interned i ON i.text = e.value), '') || ']',
       v.value_hash, v.created_at
FROM verdicts v;

DROP INDEX interned_text_migration;
DROP TABLE verdicts;
ALTER TABLE verdicts_interned RENAME TO verdicts;
CREATE INDEX verdicts_pd ON verdicts(pd_seq, phase_index, field_key);
