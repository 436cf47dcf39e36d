-- Verdicts are the executor's most frequent rows. Most of a verdict was text that repeats from
-- document to document: the gate's 36-character stage id and, per mechanism, a JSON object such
-- as {"validatorType":"min_confidence","verdict":"pass","confidence":0.95,"reasoning":"confidence
-- 0.95 vs threshold 0.5"}. Each such text is now stored once, in `interned`, and a verdict holds
-- integers (issue 20).

-- Append-only: a verdict refers to these ids, so none may change or go away (a purge leaves them).
-- `hash` is the FNV-1a 64 of `text` (`store::intern::hash`; `quire_hash` in SQL while this
-- migration runs), so a lookup reads an 8-byte index instead of a second copy of every text.
CREATE TABLE interned (
    id   INTEGER PRIMARY KEY,
    hash INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX interned_hash ON interned(hash);
CREATE TRIGGER interned_no_update BEFORE UPDATE ON interned BEGIN
    SELECT RAISE(ABORT, 'interned texts are append-only'); END;
CREATE TRIGGER interned_no_delete BEFORE DELETE ON interned BEGIN
    SELECT RAISE(ABORT, 'interned texts are append-only'); END;

INSERT INTO interned(hash, text)
SELECT quire_hash(t), t FROM (
    SELECT stage_id AS t FROM verdicts
    UNION
    SELECT e.value FROM verdicts v, json_each(v.mechanisms) e
);

-- `stage`: the interned stage id. `mechanisms`: the interned ids of its mechanisms' objects,
-- comma-separated in order ('' for none); readers join them back into the JSON array.
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
       (SELECT i.id FROM interned i WHERE i.hash = quire_hash(v.stage_id) AND i.text = v.stage_id),
       v.generation, v.pass, v.outcome, v.suppressed, v.reason,
       coalesce((SELECT group_concat(i.id, ',' ORDER BY e.key) FROM json_each(v.mechanisms) e
                 JOIN interned i ON i.hash = quire_hash(e.value) AND i.text = e.value), ''),
       v.value_hash, v.created_at
FROM verdicts v;

DROP TABLE verdicts;
ALTER TABLE verdicts_interned RENAME TO verdicts;
CREATE INDEX verdicts_pd ON verdicts(pd_seq, phase_index, field_key);
