#!/usr/bin/env python3
"""Schema parity between the SQLite schema (/tmp/schema.db, after migrations 0001-0017) and the
PG baseline (migrations/pg/0001_initial.sql applied to database $PGDB), plus a differential run: the same DML
on a copy of the SQLite schema and on a PG database, comparing what the triggers and the view
leave behind.

Usage: parity.py PGDB [DIFFDB [PURGEDB]]   (connection: -h /tmp/pgtest -p 55432 -U postgres)
DIFFDB and PURGEDB, when given, must each be a fresh database with 0001_initial.sql applied (it is written to).
Exit status 1 on any mismatch."""
import json, os, re, shutil, sqlite3, subprocess, sys, tempfile

PSQL = ["psql", "-h", "/tmp/pgtest", "-p", "55432", "-U", "postgres", "-X", "-v", "ON_ERROR_STOP=1"]
SQLITE_DB = "/tmp/schema.db"
problems = []


def pg(db, sql):
    out = subprocess.run(PSQL + ["-d", db, "-At", "-F", "\t", "-c", sql],
                         check=True, capture_output=True, text=True).stdout
    return [tuple(l.split("\t")) for l in out.splitlines() if l != ""]


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (f"  {detail}" if detail and not ok else ""))
    if not ok:
        problems.append(what)


TYPE = {"INTEGER": "bigint", "TEXT": "text", "REAL": "double precision", "BLOB": "bytea"}


def norm_default(d):
    if d is None:
        return None
    d = re.sub(r"::(text|bigint|double precision|bytea)$", "", d)
    return d


def parity(db):
    s = sqlite3.connect(f"file:{SQLITE_DB}?mode=ro", uri=True)
    s_tables = sorted(r[0] for r in s.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"))
    p_tables = sorted(r[0] for r in pg(db, "SELECT tablename FROM pg_tables WHERE schemaname='public'"))
    check(f"tables: {len(s_tables)} in SQLite (sqlite_sequence excluded), {len(p_tables)} in PG, same names",
          s_tables == p_tables, f"only SQLite {set(s_tables)-set(p_tables)} only PG {set(p_tables)-set(s_tables)}")

    # Columns: name, order, mapped type, NOT NULL, default, collation.
    pcols = {}
    for t, name, pos, typ, nn, dflt, coll, ident in pg(db, """
        SELECT c.table_name, c.column_name, c.ordinal_position, c.data_type, c.is_nullable,
               coalesce(c.column_default, ''), coalesce(c.collation_name, ''), c.is_identity
        FROM information_schema.columns c WHERE c.table_schema='public'
          AND c.table_name IN (SELECT tablename FROM pg_tables WHERE schemaname='public')
        ORDER BY 1, 3"""):
        pcols.setdefault(t, []).append((name, typ, nn == "NO", dflt or None, coll, ident == "YES"))
    ncols = bad = 0
    for t in s_tables:
        info = list(s.execute(f'PRAGMA table_info("{t}")'))
        pk_cols = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
        rowid_key = len(pk_cols) == 1 and [r[2] for r in info if r[1] == pk_cols[0]][0] == "INTEGER"
        srows = [(r[1], TYPE[r[2]], bool(r[3]) or bool(r[5]), norm_default(r[4])) for r in info]
        prows = pcols.get(t, [])
        ncols += len(srows)
        if [r[0] for r in srows] != [r[0] for r in prows]:
            check(f"columns of {t} (names, order)", False, f"{[r[0] for r in srows]} vs {[r[0] for r in prows]}")
            bad += 1
            continue
        for (n, ty, nn, d), (pn, pty, pnn, pd, pcoll, pident) in zip(srows, prows):
            errs = []
            if ty != pty: errs.append(f"type {ty}/{pty}")
            if nn != pnn: errs.append(f"not null {nn}/{pnn}")
            if norm_default(pd) != d: errs.append(f"default {d}/{pd}")
            if pty == "text" and pcoll != "C": errs.append(f"collation {pcoll}")
            # rowid keys -> identity, except the two that are always written explicitly
            want_ident = rowid_key and n == pk_cols[0] and t not in ("schema_migrations", "purge_window")
            if want_ident != pident: errs.append(f"identity {want_ident}/{pident}")
            if errs:
                bad += 1
                check(f"column {t}.{n}", False, "; ".join(errs))
    check(f"columns: {ncols} columns, same order, mapped types, NOT NULL, defaults, COLLATE \"C\", identities", bad == 0)

    # Primary keys, UNIQUE constraints, foreign keys, CHECKs.
    def s_keys(t):
        info = list(s.execute(f'PRAGMA table_info("{t}")'))
        pk = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
        uniq = set()
        for _, iname, unique, origin, _p in s.execute(f'PRAGMA index_list("{t}")'):
            if origin == "u":
                uniq.add(tuple(r[2] for r in s.execute(f'PRAGMA index_info("{iname}")')))
            if origin == "pk" and not pk:
                pk = tuple(r[2] for r in s.execute(f'PRAGMA index_info("{iname}")'))
        fks = set()
        rows = list(s.execute(f'PRAGMA foreign_key_list("{t}")'))
        for fid in sorted({r[0] for r in rows}):
            rr = sorted((r for r in rows if r[0] == fid), key=lambda r: r[1])
            to = tuple(r[4] for r in rr)
            if to == (None,):  # REFERENCES t with no column: the target's key
                to = ("?",)
            fks.add((tuple(r[3] for r in rr), rr[0][2], to, rr[0][6]))
        return pk, uniq, fks
    p_cons = pg(db, """
        SELECT cl.relname, con.contype,
               (SELECT string_agg(a.attname, ',' ORDER BY k.i) FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                  JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n),
               coalesce(fc.relname, ''),
               coalesce((SELECT string_agg(a.attname, ',' ORDER BY k.i) FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                  JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n), ''),
               con.confdeltype, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class cl ON cl.oid = con.conrelid
        LEFT JOIN pg_class fc ON fc.oid = con.confrelid
        JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE n.nspname = 'public'""")
    bad = 0
    nfk = nuq = 0
    for t in s_tables:
        pk, uniq, fks = s_keys(t)
        ppk = tuple(next((c for tt, ty, c, *_ in p_cons if tt == t and ty == "p"), "").split(","))
        puniq = {tuple(c.split(",")) for tt, ty, c, *_ in p_cons if tt == t and ty == "u"}
        act = {"a": "NO ACTION", "c": "CASCADE"}
        pfks = {(tuple(c.split(",")), ft, tuple(fc.split(",")), act.get(dt, dt))
                for tt, ty, c, ft, fc, dt, _ in p_cons if tt == t and ty == "f"}
        nfk += len(fks); nuq += len(uniq)
        if pk != ppk or uniq != puniq or fks != pfks:
            bad += 1
            check(f"keys of {t}", False, f"pk {pk}/{ppk} unique {uniq}/{puniq} fk {fks}/{pfks}")
    check(f"keys: primary keys of all tables, {nuq} UNIQUE constraints, {nfk} foreign keys (with ON DELETE) match", bad == 0)
    s_checks = [(r[0], m) for r in s.execute("SELECT name, sql FROM sqlite_master WHERE type='table'")
                for m in re.findall(r"CHECK\s*\(([^)]*)\)", r[1] or "")]
    p_checks = [(tt, d) for tt, ty, c, ft, fc, dt, d in p_cons if ty == "c"]
    check(f"CHECK constraints: SQLite {s_checks} / PG {p_checks}",
          [t for t, _ in s_checks] == [t for t, _ in p_checks])

    # Explicit indexes: name, table, columns, unique, partial predicate.
    s_idx = {r[0]: (r[1], r[2]) for r in s.execute(
        "SELECT name, tbl_name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")}
    p_idx = {r[0]: (r[1], r[2]) for r in pg(db, """
        SELECT i.indexname, i.tablename, i.indexdef FROM pg_indexes i WHERE i.schemaname='public'
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = (quote_ident(i.indexname))::regclass)""")}
    check(f"indexes: {len(s_idx)} explicit in SQLite, {len(p_idx)} non-constraint in PG, same names",
          set(s_idx) == set(p_idx), f"only SQLite {set(s_idx)-set(p_idx)} only PG {set(p_idx)-set(s_idx)}")
    bad = 0
    for name in sorted(set(s_idx) & set(p_idx)):
        st, ssql = s_idx[name]
        pt, psql_ = p_idx[name]
        scols = [r[2] for r in s.execute(f'PRAGMA index_info("{name}")')]
        pcols_ = re.search(r"USING btree \(([^)]*)\)", psql_).group(1).split(", ")
        spartial = " WHERE " in ssql.upper().replace("\n", " ")
        ppartial = " WHERE " in psql_
        if st.strip('"') != pt or scols != pcols_ or spartial != ppartial:
            bad += 1
            check(f"index {name}", False, f"{st}{scols} partial={spartial} / {pt}{pcols_} partial={ppartial}")
    check("indexes: same table, columns and partial-ness for each", bad == 0)

    # Triggers: name and table.
    s_trg = {r[0]: r[1] for r in s.execute("SELECT name, tbl_name FROM sqlite_master WHERE type='trigger'")}
    p_trg = {r[0]: r[1] for r in pg(db, """
        SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE NOT t.tgisinternal""")}
    extra = sorted(set(p_trg) - set(s_trg))
    check(f"triggers: all {len(s_trg)} SQLite triggers exist in PG on the same table; PG-only: {extra}",
          all(p_trg.get(n) == t for n, t in s_trg.items())
          and all(n.endswith("_no_truncate") for n in extra))

    # View: name and columns.
    s_view = [r[1] for r in s.execute("PRAGMA table_info(pipeline_documents)")]
    p_view = [r[0] for r in pg(db, """SELECT column_name FROM information_schema.columns
        WHERE table_name='pipeline_documents' ORDER BY ordinal_position""")]
    check(f"view pipeline_documents: {len(s_view)} columns, same names and order", s_view == p_view,
          f"{s_view} / {p_view}")
    p_vtypes = pg(db, """SELECT column_name, data_type, coalesce(collation_name,'') FROM information_schema.columns
        WHERE table_name='pipeline_documents' AND data_type='text' AND coalesce(collation_name,'') <> 'C'""")
    check("view pipeline_documents: every text column comes out COLLATE \"C\"", not p_vtypes, str(p_vtypes))


# The same DML, valid in both dialects, on both stores.
SCENARIO = """
INSERT INTO organizations(id, name, created_at) VALUES ('o1', 'Org', 't');
INSERT INTO api_keys(id, org_id, name, prefix, key_hash, scopes, created_at) VALUES ('k1', 'o1', 'n', 'p', 'aa', 's', 't');
INSERT INTO api_keys(id, org_id, name, prefix, key_hash, scopes, created_at) VALUES ('k2', 'o1', 'n', 'p', 'bb', 's', 't');
UPDATE api_keys SET name = 'm';
DELETE FROM api_keys WHERE id = 'k2';
INSERT INTO schemas(id, short_id, org_id, name, definition, fields, created_at, updated_at) VALUES ('s1', 's', 'o1', 'S', '{}', '[]', 't', 't');
INSERT INTO pipelines(id, org_id, schema_id, schema_name, name, status, fields, phase_count, document_count, created_at, updated_at) VALUES ('p1', 'o1', 's1', 'S', 'P', 'running', '[]', 3, 5, 't', 't');
INSERT INTO pipelines(id, org_id, schema_id, schema_name, name, status, fields, phase_count, document_count, created_at, updated_at) VALUES ('p2', 'o1', 's1', 'S', 'P2', 'running', '[]', 3, 1, 't', 't');
INSERT INTO documents(id, org_id, filename, mime_type, size_bytes, sha256, content, created_at) VALUES ('d1', 'o1', 'f', 'text/plain', 1, 'h', 'x', 't');
INSERT INTO pipeline_docs(id, pipeline_id, document_id, ordinal, status, created_at, updated_at) VALUES ('a', 'p1', 'd1', 1, 'queued', 't', 't');
INSERT INTO pipeline_docs(id, pipeline_id, document_id, ordinal, status, created_at, updated_at) VALUES ('b', 'p1', 'd1', 2, 'queued', 't', 't');
INSERT INTO pipeline_docs(id, pipeline_id, document_id, ordinal, status, created_at, updated_at) VALUES ('c', 'p1', 'd1', 3, 'queued', 't', 't');
INSERT INTO pipeline_docs(id, pipeline_id, document_id, ordinal, status, created_at, updated_at) VALUES ('d', 'p1', 'd1', 4, 'queued', 't', 't');
INSERT INTO pipeline_docs(id, pipeline_id, document_id, ordinal, status, created_at, updated_at) VALUES ('e', 'p2', 'd1', 1, 'queued', 't', 't');
INSERT INTO pipeline_docs(id, pipeline_id, document_id, ordinal, status, cursor, error_phase_index, created_at, updated_at) VALUES ('f', 'p1', 'd1', 5, 'error', 1, 1, 't', 't');
UPDATE pipeline_docs SET status = 'processing', claim_token = 'x' WHERE id IN ('a', 'b');
UPDATE pipeline_docs SET status = 'processing' WHERE id = 'a';
UPDATE pipeline_docs SET attempts = attempts + 1;
UPDATE pipeline_docs SET status = 'error', cursor = 2, error_phase_index = 1 WHERE id = 'a';
UPDATE pipeline_docs SET status = 'completed', cursor = 3 WHERE id = 'b';
UPDATE pipeline_docs SET error_phase_index = NULL, cursor = 0 WHERE id = 'a';
UPDATE pipeline_docs SET error_phase_index = 2 WHERE id = 'a';
UPDATE pipeline_docs SET generation = 2, status = 'queued', cursor = 1, restarts = '[[2,1]]' WHERE id = 'c';
DELETE FROM pipeline_docs WHERE id = 'd';
UPDATE pipeline_docs SET field_states = '{"x":{"flags":[{"phase":2},{"phase":1}]},"y":"c5"}' WHERE id = 'a';
UPDATE pipeline_docs SET field_states = '{"x":{"flags":[{"phase":4}]},"y":{"flags":[]}}' WHERE id = 'b';
UPDATE pipeline_docs SET field_states = '{"x":{"flags":[{"phase":3}]}}' WHERE id = 'c';
UPDATE pipeline_docs SET field_states = '{"x":"c2"}' WHERE id = 'c';
UPDATE pipeline_docs SET field_states = '{"x":{"note":"no flag"}}' WHERE id = 'e';
UPDATE pipeline_docs SET status = 'completed' WHERE id = 'a';
UPDATE pipelines SET lazy_generation = 3, lazy_from = 2, lazy_at = 'lz' WHERE id = 'p1';
"""

QUERIES = {
    "pipeline_status_counts": "SELECT pipeline_id, generation, status, cursor, error_phase, count FROM pipeline_status_counts ORDER BY 1, 2, 3, 4, 5",
    "counts = GROUP BY of pipeline_docs": "SELECT pipeline_id, generation, status, cursor, coalesce(error_phase_index, -1), count(*) FROM pipeline_docs GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
    "flag_phase": "SELECT id, flag_phase FROM pipeline_docs ORDER BY id",
    "keys_epoch": "SELECT value FROM settings WHERE key = 'keys_epoch'",
    "view pipeline_documents": "SELECT id, status, cursor, generation, pass, claim_token, attempts, error, error_phase_index, restarts, field_states, updated_at FROM pipeline_documents ORDER BY id",
}


def norm(v):
    if v is None or v == "":
        return None
    s = str(v)
    if s[:1] in "[{":
        try:
            return json.dumps(json.loads(s), sort_keys=True)
        except ValueError:
            pass
    return s


def differential(db):
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "d.db")
    # An empty SQLite store with the same schema (/tmp/schema.db holds a few rows already).
    src = sqlite3.connect(f"file:{SQLITE_DB}?mode=ro", uri=True)
    s = sqlite3.connect(path)
    for (sql,) in src.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name <> 'sqlite_sequence' ORDER BY rowid"):
        s.execute(sql)
    s.execute("INSERT INTO settings(key, value) VALUES ('keys_epoch', '0')")
    s.commit()
    s.execute("PRAGMA foreign_keys = ON")
    # PG: bytea from the hex text literal; SQLite stores the text. Neither is read back here.
    s.executescript(SCENARIO)
    subprocess.run(PSQL + ["-d", db, "-q", "-c", SCENARIO], check=True)
    for name, q in QUERIES.items():
        srows = [tuple(norm(v) for v in r) for r in s.execute(q)]
        prows = [tuple(norm(v) for v in r) for r in pg(db, q)]
        check(f"differential {name}: {len(srows)} rows equal", srows == prows, f"\n  sqlite {srows}\n  pg     {prows}")
        if name in ("pipeline_status_counts", "flag_phase", "view pipeline_documents"):
            for r in prows:
                print("       ", r)
    # The one textual difference the view has: jsonb renders the appended restart with spaces.
    print("       view restarts text, SQLite:", [r[0] for r in s.execute("SELECT restarts FROM pipeline_documents WHERE id='a'")],
          "PG:", [r[0] for r in pg(db, "SELECT restarts FROM pipeline_documents WHERE id='a'")])
    shutil.rmtree(tmp)


PURGE_FIXTURE = """
INSERT INTO organizations(id, name, created_at) VALUES ('o1', 'Org', 't');
INSERT INTO schemas(id, short_id, org_id, name, definition, fields, created_at, updated_at) VALUES ('s1', 's', 'o1', 'S', '{}', '[]', 't', 't');
INSERT INTO pipelines(id, org_id, schema_id, schema_name, name, status, fields, phase_count, document_count, created_at, updated_at) VALUES ('p1', 'o1', 's1', 'S', 'P', 'running', '[]', 3, 3, 't', 't');
INSERT INTO documents(id, org_id, filename, mime_type, size_bytes, sha256, content, created_at) VALUES ('d1', 'o1', 'f', 'text/plain', 1, 'h', 'x', 't');
INSERT INTO pipeline_docs(seq, id, pipeline_id, document_id, ordinal, status, generation, restarts, created_at, updated_at) VALUES (1, 'pd1', 'p1', 'd1', 1, 'queued', 3, '[[2,1],[3,2]]', 't', 't');
INSERT INTO pipeline_docs(seq, id, pipeline_id, document_id, ordinal, status, generation, restarts, created_at, updated_at) VALUES (2, 'pd2', 'p1', 'd1', 2, 'queued', 1, '[]', 't', 't');
INSERT INTO pipelines(id, org_id, schema_id, schema_name, name, status, fields, phase_count, document_count, created_at, updated_at, lazy_generation, lazy_from) VALUES ('p2', 'o1', 's1', 'S', 'P', 'running', '[]', 3, 3, 't', 't', 2, 0);
INSERT INTO pipeline_docs(seq, id, pipeline_id, document_id, ordinal, status, generation, restarts, created_at, updated_at) VALUES (3, 'pd3', 'p2', 'd1', 1, 'completed', 1, '[]', 't', 't');
INSERT INTO review_decisions(id, org_id, pipeline_id, pd_seq, field_key, trigger_type, action, decided_by, decided_by_name, decided_at) VALUES ('rd1', 'o1', 'p1', 1, 'a', 'm', 'approve', 'u', 'U', 't');
INSERT INTO interned(text) VALUES ('t');
"""
# cells: (seq, pd_seq, source, phase_index, generation)
CELLS = [(1, 1, "rules_extraction", 1, 1), (2, 1, "rules_extraction", 0, 1), (3, 1, "rules_extraction", 1, 2),
         (4, 1, "human_review", 1, 1), (5, 1, "model_extraction", 2, 1), (6, 1, "rules_extraction", 2, 2),
         (7, 1, "rules_extraction", 1, 3), (8, 2, "rules_extraction", 1, 1), (9, 3, "rules_extraction", 0, 1)]


def purge_differential(db):
    """Every cell DELETE (in and out of a purge window) and every UPDATE/DELETE on the guarded
    tables: allowed or refused alike in SQLite and PG."""
    fixture = PURGE_FIXTURE + "".join(
        f"INSERT INTO cells(seq, pd_seq, field_key, version, source, phase_index, generation, pass, created_at) "
        f"VALUES ({c[0]}, {c[1]}, 'a', {c[0]}, '{c[2]}', {c[3]}, {c[4]}, 1, 't');\n" for c in CELLS)
    s = sqlite3.connect(":memory:")
    src = sqlite3.connect(f"file:{SQLITE_DB}?mode=ro", uri=True)
    for (sql,) in src.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name <> 'sqlite_sequence' ORDER BY rowid"):
        s.execute(sql)
    s.execute("PRAGMA foreign_keys = ON")
    s.executescript(fixture)
    subprocess.run(PSQL + ["-d", db, "-q", "-c", fixture], check=True)
    cases = []
    for window in (False, True):
        for c in CELLS:
            cases.append((window, f"DELETE FROM cells WHERE seq = {c[0]}"))
        cases += [(window, "UPDATE cells SET note = 'x' WHERE seq = 1"),
                  (window, "UPDATE review_decisions SET reason = 'x'"), (window, "DELETE FROM review_decisions"),
                  (window, "UPDATE interned SET text = 'x'"), (window, "DELETE FROM interned"),
                  (window, "DELETE FROM verdicts")]
    bad = 0
    allowed = []
    for window, stmt in cases:
        pre = "INSERT INTO purge_window(open) VALUES (1); " if window else ""
        s.execute("SAVEPOINT t")
        try:
            if window:
                s.execute("INSERT INTO purge_window(open) VALUES (1)")
            s.execute(stmt)
            s_out = "allowed"
        except sqlite3.DatabaseError as e:
            s_out = "refused: " + str(e)
        s.execute("ROLLBACK TO t")
        s.execute("RELEASE t")
        r = subprocess.run(PSQL + ["-d", db, "-q", "-c", f"BEGIN; {pre}{stmt}; ROLLBACK;"], capture_output=True, text=True)
        p_out = "allowed" if r.returncode == 0 else "refused: " + re.sub(r"^ERROR:\s*", "", r.stderr.strip().splitlines()[0])
        if s_out == "allowed":
            allowed.append(("window " if window else "") + stmt)
        if s_out != p_out:
            bad += 1
            check(f"{'in' if window else 'outside'} a window: {stmt}", False, f"sqlite {s_out} / pg {p_out}")
    check(f"append-only differential: {len(cases)} UPDATE/DELETE cases, same outcome and message in both; allowed: {allowed}", bad == 0)


if __name__ == "__main__":
    parity(sys.argv[1])
    if len(sys.argv) > 2:
        differential(sys.argv[2])
    if len(sys.argv) > 3:
        purge_differential(sys.argv[3])
    print("PARITY " + ("FAILED: " + ", ".join(problems) if problems else "OK"))
    sys.exit(1 if problems else 0)
