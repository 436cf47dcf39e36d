-- Behaviour checks of migrations/pg/0001_initial.sql on a fresh database where it was applied.
-- Run: psql -h /tmp/pgtest -p 55432 -U postgres -d DB -v ON_ERROR_STOP=1 -f check.sql
-- Every check is a DO block that raises (and so stops the script) when it fails, and prints a
-- NOTICE "ok: ..." when it passes. Structural parity (tables, columns, indexes, trigger names)
-- is checked by parity.py.
\set QUIET on
-- Results of the checks come as NOTICEs (stderr); the void SELECT rows are not shown.
\o /dev/null
SET client_min_messages = notice;

-- expect_error(sql, text): runs sql, which must fail with a message containing text.
CREATE FUNCTION pg_temp.expect_error(q text, msg text, what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        EXECUTE q;
    EXCEPTION WHEN OTHERS THEN
        IF strpos(SQLERRM, msg) = 0 THEN
            RAISE EXCEPTION 'FAIL %: wrong error "%" (wanted "%")', what, SQLERRM, msg;
        END IF;
        RAISE NOTICE 'ok: % refused: %', what, SQLERRM;
        RETURN;
    END;
    RAISE EXCEPTION 'FAIL %: was not refused', what;
END $$;

-- expect_rows(sql, n): runs sql (an UPDATE/DELETE/INSERT), which must succeed on n rows.
CREATE FUNCTION pg_temp.expect_rows(q text, n bigint, what text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE got bigint;
BEGIN
    EXECUTE q;
    GET DIAGNOSTICS got = ROW_COUNT;
    IF got <> n THEN RAISE EXCEPTION 'FAIL %: % rows, wanted %', what, got, n; END IF;
    RAISE NOTICE 'ok: % allowed (% rows)', what, got;
END $$;

CREATE FUNCTION pg_temp.expect(cond boolean, what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF cond IS NOT TRUE THEN RAISE EXCEPTION 'FAIL %', what; END IF;
    RAISE NOTICE 'ok: %', what;
END $$;

-- Fixtures --------------------------------------------------------------------------------------
INSERT INTO organizations(id, name, created_at) VALUES ('o1', 'Org', '2024-01-01T00:00:00Z');
INSERT INTO schemas(id, short_id, org_id, name, definition, fields, created_at, updated_at)
VALUES ('s1', 's', 'o1', 'S', '{}', '[]', 't', 't');
INSERT INTO pipelines(id, org_id, schema_id, schema_name, name, status, fields, phase_count, document_count, created_at, updated_at)
VALUES ('p1', 'o1', 's1', 'S', 'P', 'running', '[]', 3, 3, 't', 't');
INSERT INTO documents(id, org_id, filename, mime_type, size_bytes, sha256, content, created_at)
VALUES ('d1', 'o1', 'f.txt', 'text/plain', 1, 'h', '\x78'::bytea, 't');
-- pd 1: restarted by generation 2 from phase 1 ([[2,1]]); pd 2: never restarted.
INSERT INTO pipeline_docs(id, pipeline_id, document_id, ordinal, status, generation, restarts, created_at, updated_at)
VALUES ('pd1', 'p1', 'd1', 1, 'queued', 2, '[[2,1]]', 't', 't'),
       ('pd2', 'p1', 'd1', 2, 'queued', 1, '[]', 't', 't');
-- cells of pd1: 1 = gen 1 phase 1 machine (superseded), 2 = gen 1 phase 0 machine (before the
-- restart phase: live), 3 = gen 2 phase 1 machine (current), 4 = gen 1 phase 1 human_review,
-- 5 = gen 1 phase 2 machine (superseded). Cell 6 of pd2 (no restart).
INSERT INTO cells(pd_seq, field_key, version, value, source, phase_index, generation, pass, created_at)
SELECT pd.seq, v.k, v.ver, 'v', v.src, v.ph, v.gen, 1, 't'
FROM (VALUES ('pd1', 'a', 1, 'rules_extraction', 1, 1), ('pd1', 'b', 1, 'rules_extraction', 0, 1),
             ('pd1', 'a', 2, 'rules_extraction', 1, 2), ('pd1', 'a', 3, 'human_review', 1, 1),
             ('pd1', 'c', 1, 'model_extraction', 2, 1), ('pd2', 'a', 1, 'rules_extraction', 1, 1))
     AS v(pd, k, ver, src, ph, gen)
JOIN pipeline_docs pd ON pd.id = v.pd;
INSERT INTO review_decisions(id, org_id, pipeline_id, pd_seq, field_key, trigger_type, action, decided_by, decided_by_name, decided_at)
SELECT 'rd1', 'o1', 'p1', seq, 'a', 'manual', 'approve', 'u', 'U', 't' FROM pipeline_docs WHERE id = 'pd1';
INSERT INTO interned(text) VALUES ('stage-1'), ('{"m":1}');

-- cells: append-only --------------------------------------------------------------------------
SELECT pg_temp.expect_error($$UPDATE cells SET value = 'w' WHERE seq = 1$$, 'cells are append-only', 'cells UPDATE');
SELECT pg_temp.expect_error($$UPDATE cells SET note = 'n'$$, 'cells are append-only', 'cells UPDATE of every row');
SELECT pg_temp.expect_error($$DELETE FROM cells WHERE seq = 1$$,
    'cells are append-only: only a purge removes versions of superseded generations', 'cells DELETE of a superseded version outside a purge window');
SELECT pg_temp.expect_error($$TRUNCATE cells$$, 'cells are append-only', 'cells TRUNCATE');
SELECT pg_temp.expect_rows($$UPDATE cells SET value = 'w' WHERE seq = -1$$, 0, 'cells UPDATE of no row');

-- cells: the purge window (inside one transaction, as purge_documents does) -----------------------
BEGIN;
SELECT pg_temp.expect_error($$INSERT INTO purge_window(open) VALUES (2)$$, 'purge_window_open_check', 'purge_window open = 2');
INSERT INTO purge_window(open) VALUES (1);
SELECT pg_temp.expect_error($$INSERT INTO purge_window(open) VALUES (1)$$, 'purge_window_pkey', 'a second purge_window row');
SELECT pg_temp.expect_error($$DELETE FROM cells WHERE seq = 4$$, 'append-only', 'purge: DELETE of a superseded human_review version');
SELECT pg_temp.expect_error($$DELETE FROM cells WHERE seq = 2$$, 'append-only', 'purge: DELETE of a version before the restart phase (live)');
SELECT pg_temp.expect_error($$DELETE FROM cells WHERE seq = 3$$, 'append-only', 'purge: DELETE of a version of the restarting generation (live)');
SELECT pg_temp.expect_error($$DELETE FROM cells WHERE seq = 6$$, 'append-only', 'purge: DELETE of a version of a never-restarted document');
SELECT pg_temp.expect_error($$DELETE FROM cells WHERE seq IN (1, 2)$$, 'append-only', 'purge: a DELETE with one refused row (whole statement fails)');
SELECT pg_temp.expect_rows($$DELETE FROM cells WHERE seq = 1$$, 1, 'purge: DELETE of a superseded machine version (gen 1 < 2, phase 1 >= 1)');
SELECT pg_temp.expect_rows($$DELETE FROM cells WHERE seq = 5$$, 1, 'purge: DELETE of a superseded model version (phase 2 >= 1)');
SELECT pg_temp.expect_error($$UPDATE cells SET value = 'w' WHERE seq = 3$$, 'cells are append-only', 'purge: UPDATE stays refused inside the window');
SELECT pg_temp.expect_error($$TRUNCATE cells$$, 'cells are append-only', 'purge: TRUNCATE stays refused inside the window');
DELETE FROM purge_window;
SELECT pg_temp.expect((SELECT count(*) FROM cells) = 4, 'purge removed exactly cells 1 and 5');
COMMIT;
SELECT pg_temp.expect_error($$DELETE FROM cells WHERE seq = 2$$, 'append-only', 'after the window closed, DELETE refused again');

-- review_decisions: append-only ---------------------------------------------------------------
SELECT pg_temp.expect_error($$UPDATE review_decisions SET reason = 'x'$$, 'the decision log is append-only', 'review_decisions UPDATE');
SELECT pg_temp.expect_error($$DELETE FROM review_decisions$$, 'the decision log is append-only', 'review_decisions DELETE');
BEGIN;
INSERT INTO purge_window(open) VALUES (1);
SELECT pg_temp.expect_error($$DELETE FROM review_decisions$$, 'the decision log is append-only', 'review_decisions DELETE inside a purge window');
ROLLBACK;
SELECT pg_temp.expect_error($$TRUNCATE review_decisions$$, 'the decision log is append-only', 'review_decisions TRUNCATE');
SELECT pg_temp.expect_rows($$INSERT INTO review_decisions(id, org_id, pipeline_id, pd_seq, field_key, trigger_type, action, decided_by, decided_by_name, decided_at)
    SELECT 'rd2', 'o1', 'p1', seq, 'a', 'manual', 'override', 'u', 'U', 't' FROM pipeline_docs WHERE id = 'pd1'$$, 1, 'review_decisions INSERT');

-- interned: append-only -----------------------------------------------------------------------
SELECT pg_temp.expect_error($$UPDATE interned SET text = 'x' WHERE id = 1$$, 'interned texts are append-only', 'interned UPDATE');
SELECT pg_temp.expect_error($$DELETE FROM interned WHERE id = 1$$, 'interned texts are append-only', 'interned DELETE');
SELECT pg_temp.expect_error($$TRUNCATE interned CASCADE$$, 'interned texts are append-only', 'interned TRUNCATE');
SELECT pg_temp.expect((SELECT array_agg(id ORDER BY id) FROM interned) = '{1,2}', 'interned ids come from the identity (1, 2)');

-- verdicts are not append-only in SQLite (a purge deletes them without a window): same here -----
INSERT INTO verdicts(pd_seq, field_key, phase_index, stage, generation, pass, outcome, mechanisms, value_hash, created_at)
SELECT seq, 'a', 1, 1, 1, 1, 'pass', '[2]', 'h', 't' FROM pipeline_docs WHERE id = 'pd1';
SELECT pg_temp.expect_rows($$DELETE FROM verdicts$$, 1, 'verdicts DELETE (no trigger, as in SQLite)');

-- keys_epoch ----------------------------------------------------------------------------------
INSERT INTO api_keys(id, org_id, name, prefix, key_hash, scopes, created_at) VALUES ('k1', 'o1', 'n', 'p', '\x01'::bytea, 's', 't');
UPDATE api_keys SET revoked_at = 't';
DELETE FROM api_keys;
SELECT pg_temp.expect((SELECT value FROM settings WHERE key = 'keys_epoch') = '3', 'keys_epoch bumped by insert, update, delete (0 -> 3)');

-- status counts -------------------------------------------------------------------------------
-- must_match(what): the non-zero counts equal a GROUP BY of pipeline_docs.
CREATE FUNCTION pg_temp.counts_match(what text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE diff bigint;
BEGIN
    SELECT count(*) INTO diff FROM (
        (SELECT pipeline_id, generation, status, cursor, error_phase, count FROM pipeline_status_counts WHERE count <> 0
         EXCEPT ALL
         SELECT pipeline_id, generation, status, cursor, coalesce(error_phase_index, -1), count(*) FROM pipeline_docs GROUP BY 1, 2, 3, 4, 5)
        UNION ALL
        (SELECT pipeline_id, generation, status, cursor, coalesce(error_phase_index, -1), count(*) FROM pipeline_docs GROUP BY 1, 2, 3, 4, 5
         EXCEPT ALL
         SELECT pipeline_id, generation, status, cursor, error_phase, count FROM pipeline_status_counts WHERE count <> 0)) d;
    IF diff <> 0 OR EXISTS (SELECT 1 FROM pipeline_status_counts WHERE count < 0) THEN
        RAISE EXCEPTION 'FAIL counts after %: % rows differ', what, diff;
    END IF;
    RAISE NOTICE 'ok: pipeline_status_counts right after %', what;
END $$;
SELECT pg_temp.counts_match('the fixture inserts');
SELECT pg_temp.expect((SELECT count FROM pipeline_status_counts WHERE pipeline_id = 'p1' AND generation = 1 AND status = 'queued' AND cursor = 0 AND error_phase = -1) = 1
    AND (SELECT count FROM pipeline_status_counts WHERE pipeline_id = 'p1' AND generation = 2 AND status = 'queued') = 1,
    'insert: one row per (generation, status, cursor, error phase), count 1 each');
INSERT INTO pipeline_docs(id, pipeline_id, document_id, ordinal, status, created_at, updated_at)
SELECT 'x' || g, 'p1', 'd1', 10 + g, 'queued', 't', 't' FROM generate_series(1, 5) g;
SELECT pg_temp.expect((SELECT count FROM pipeline_status_counts WHERE pipeline_id = 'p1' AND generation = 1 AND status = 'queued' AND cursor = 0 AND error_phase = -1) = 6,
    'multi-row insert: the upsert adds to the existing row (1 + 5 = 6)');
UPDATE pipeline_docs SET status = 'processing', claim_token = 'c' WHERE id IN ('x1', 'x2');
SELECT pg_temp.counts_match('update of status');
UPDATE pipeline_docs SET status = 'error', cursor = 2, error_phase_index = 1 WHERE id = 'x1';
SELECT pg_temp.counts_match('update of status, cursor, error_phase_index');
UPDATE pipeline_docs SET error_phase_index = NULL WHERE id = 'x1';
SELECT pg_temp.counts_match('update of error_phase_index to NULL (IS DISTINCT FROM)');
UPDATE pipeline_docs SET generation = 3, status = 'queued', cursor = 0 WHERE id = 'x3';
SELECT pg_temp.counts_match('update of generation');
CREATE TEMP TABLE before_counts AS SELECT * FROM pipeline_status_counts;
UPDATE pipeline_docs SET status = status, cursor = cursor, attempts = attempts + 1;
SELECT pg_temp.expect(NOT EXISTS (SELECT * FROM pipeline_status_counts EXCEPT SELECT * FROM before_counts)
    AND NOT EXISTS (SELECT * FROM before_counts EXCEPT SELECT * FROM pipeline_status_counts),
    'update that sets status/cursor to the same values changes no count (WHEN is false)');
DELETE FROM pipeline_docs WHERE id IN ('x4', 'x5');
SELECT pg_temp.counts_match('delete');
SELECT pg_temp.expect((SELECT count FROM pipeline_status_counts WHERE pipeline_id = 'p1' AND generation = 1 AND status = 'processing' AND cursor = 0 AND error_phase = -1) = 1
    AND EXISTS (SELECT 1 FROM pipeline_status_counts WHERE status = 'error' AND cursor = 2 AND error_phase = 1 AND count = 0),
    'a count that drops to 0 keeps its row, as in SQLite');

-- flag_phase ----------------------------------------------------------------------------------
UPDATE pipeline_docs SET field_states = '{"a":{"flags":[{"phase":2},{"phase":1}]},"b":"c5","c":{"flags":[{"phase":3}]}}' WHERE id = 'pd2';
SELECT pg_temp.expect((SELECT flag_phase FROM pipeline_docs WHERE id = 'pd2') = 1, 'flag_phase = lowest flag phase over object states (1)');
UPDATE pipeline_docs SET attempts = attempts + 1, flag_phase = 9 WHERE id = 'pd2';
SELECT pg_temp.expect((SELECT flag_phase FROM pipeline_docs WHERE id = 'pd2') = 9, 'an update not naming field_states leaves flag_phase as written');
UPDATE pipeline_docs SET field_states = field_states, flag_phase = 9 WHERE id = 'pd2';
SELECT pg_temp.expect((SELECT flag_phase FROM pipeline_docs WHERE id = 'pd2') = 1, 'an update of field_states recomputes flag_phase, overriding a value set alongside');
UPDATE pipeline_docs SET field_states = '{"a":"c2"}' WHERE id = 'pd2';
SELECT pg_temp.expect((SELECT flag_phase FROM pipeline_docs WHERE id = 'pd2') IS NULL, 'flags gone: flag_phase back to NULL');
UPDATE pipeline_docs SET field_states = '{"a":{"flags":[]}}' WHERE id = 'pd2';
SELECT pg_temp.expect((SELECT flag_phase FROM pipeline_docs WHERE id = 'pd2') IS NULL, 'empty flags: NULL');
SELECT pg_temp.counts_match('the flag_phase updates');

-- held_counts -----------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.held_match(what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT pipeline_id, CASE WHEN routing = 'hold' THEN 1 ELSE 0 END, count(*) FROM held_fields GROUP BY 1, 2
               EXCEPT SELECT pipeline_id, hold, count FROM held_counts WHERE count <> 0)
       OR EXISTS (SELECT pipeline_id, hold, count FROM held_counts WHERE count <> 0
               EXCEPT SELECT pipeline_id, CASE WHEN routing = 'hold' THEN 1 ELSE 0 END, count(*) FROM held_fields GROUP BY 1, 2) THEN
        RAISE EXCEPTION 'FAIL held_counts differ from a GROUP BY after %', what;
    END IF;
    RAISE NOTICE 'ok: held_counts right after %', what;
END $$;
INSERT INTO held_fields(pd_seq, field_key, org_id, pipeline_id, status, trigger_type, routing, requested_at, blocked_at)
SELECT pd.seq, f, 'o1', pd.pipeline_id, 'blocked', 'gate', CASE WHEN f = 'c' THEN 'hold' ELSE 'review_queue' END, 't', 2
FROM pipeline_docs pd CROSS JOIN (VALUES ('a'), ('b'), ('c')) v(f);
SELECT pg_temp.held_match('inserts');
DELETE FROM held_fields WHERE field_key = 'b' OR (field_key = 'c' AND pd_seq % 2 = 0);
SELECT pg_temp.held_match('deletes');
UPDATE held_fields SET requested_at = 'u', status = 'pending_review';
SELECT pg_temp.held_match('an update of other columns');
SELECT pg_temp.expect_error($$UPDATE held_fields SET routing = 'hold'$$, 'run and routing are fixed', 'moving a review row to another routing');
SELECT pg_temp.expect_error($$TRUNCATE held_fields$$, 'held_fields is counted', 'TRUNCATE held_fields');

-- partial indexes are usable with the PG forms of the queries -----------------------------------
SET enable_seqscan = off;
CREATE FUNCTION pg_temp.plan_uses(q text, idx text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE line text; found boolean := false;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN ' || q LOOP
        IF strpos(line, idx) > 0 THEN found := true; END IF;
    END LOOP;
    IF NOT found THEN RAISE EXCEPTION 'FAIL plan of % does not use %', q, idx; END IF;
    RAISE NOTICE 'ok: % is usable', idx;
END $$;
SELECT pg_temp.plan_uses($$SELECT seq FROM pipeline_docs WHERE pipeline_id = 'p1' AND (strpos(field_states, '"pinned":true') > 0 OR strpos(field_states, '"guards"') > 0
   OR strpos(field_states, '"reopened_after"') > 0 OR strpos(field_states, '"resumed"') > 0
   OR strpos(field_states, '"review_at"') > 0 OR strpos(field_states, '"element_pins"') > 0)$$, 'pipeline_docs_sticky');
SELECT pg_temp.plan_uses($$SELECT seq FROM pipeline_docs WHERE status = 'queued' ORDER BY seq LIMIT 1$$, 'pipeline_documents_queued');
SELECT pg_temp.plan_uses($$SELECT seq FROM pipelines WHERE lazy_pending = 1$$, 'pipelines_lazy_pending');
RESET enable_seqscan;

\o
\echo check.sql: all checks passed
