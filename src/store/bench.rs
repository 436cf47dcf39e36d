//! What `quire bench` reads of the run it measured, and the ceiling it compares against: the
//! same rows inserted by a bare prepared-statement loop, the fastest this database (the SQLite
//! file's, or the PostgreSQL server's) can store them.

use super::conn::{params, Connection};
use super::sql::Dialect;
use std::time::Instant;

/// A stored version's columns, to insert again in the ceiling database.
type CellTemplate = (
    String,
    i64,
    Option<String>,
    String,
    i64,
    Option<f64>,
    Option<String>,
    Option<i64>,
    Option<String>,
);
/// A stored verdict's columns.
type VerdictTemplate = (
    String,
    i64,
    i64,
    String,
    i64,
    Option<String>,
    String,
    String,
);

/// The benchmark's database, read beside the running service.
pub struct BenchDb {
    c: Connection,
    /// What `--db` named: the ceiling is measured in a database of the same kind.
    db: String,
}

/// Whether `db` names a database the benchmark may fill: a file that does not exist yet, or a
/// PostgreSQL schema without tables.
pub fn is_fresh(db: &str) -> Result<bool, String> {
    if !super::is_postgres_url(db) {
        return Ok(!std::path::Path::new(db).exists());
    }
    let c = Connection::connect_pg(db).map_err(|e| e.to_string())?;
    let tables: i64 = c
        .query_row(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
            [],
            |r| r.get(0),
        )
        .map_err(|e| e.to_string())?;
    Ok(tables == 0)
}

impl BenchDb {
    pub fn open(db: &str) -> Result<Self, String> {
        let c = if super::is_postgres_url(db) {
            Connection::connect_pg(db)
        } else {
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map(Connection::from_sqlite)
                .map_err(Into::into)
        };
        Ok(BenchDb {
            c: c.map_err(|e| e.to_string())?,
            db: db.to_string(),
        })
    }

    /// Bytes in use: SQLite's pages without free pages or the WAL; PostgreSQL's tables with
    /// their indexes and TOAST.
    pub fn used_bytes(&self) -> Result<i64, String> {
        if self.c.dialect() == Dialect::Postgres {
            return super::schema_bytes(&self.c)
                .map(|b| b as i64)
                .map_err(|e| e.to_string());
        }
        let q = |p: &str| {
            self.c
                .query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0))
                .map_err(|e| e.to_string())
        };
        Ok((q("page_count")? - q("freelist_count")?) * q("page_size")?)
    }

    /// Bytes the PostgreSQL server has written to its WAL so far (the service's writes are the
    /// server's, not this process's); `None` for SQLite, whose writes this process makes.
    pub fn server_written_bytes(&self) -> Result<Option<f64>, String> {
        if self.c.dialect() != Dialect::Postgres {
            return Ok(None);
        }
        self.c
            .query_row(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8",
                [],
                |r| r.get(0),
            )
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Documents of a run that ended `partial`.
    pub fn partial_count(&self, pipeline_id: &str) -> Result<i64, String> {
        self.c
            .query_row(
                "SELECT count(*) FROM pipeline_documents WHERE pipeline_id = ?1 AND status = 'partial'",
                [pipeline_id],
                |r| r.get(0),
            )
            .map_err(|e| e.to_string())
    }

    /// Documents of a run by the node that last committed them (its name, without the
    /// incarnation).
    pub fn finished_by_node(&self, pipeline_id: &str) -> Result<Vec<(String, i64)>, String> {
        self.c
            .prepare(
                "SELECT coalesce(claimed_by, ''), count(*) FROM pipeline_docs WHERE pipeline_id = ?1 GROUP BY 1 ORDER BY 1",
            )
            .and_then(|mut s| {
                s.query_map([pipeline_id], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<(String, i64)>, _>>()
            })
            .map(|rows| {
                let mut by: std::collections::BTreeMap<String, i64> = Default::default();
                for (id, n) in rows {
                    let name = id.split('/').next().unwrap_or_default().to_string();
                    *by.entry(name).or_default() += n;
                }
                by.into_iter().collect()
            })
            .map_err(|e| e.to_string())
    }

    /// Versions written in a generation, by phase.
    pub fn cells_per_phase(&self, generation: i64) -> Result<Vec<(i64, i64)>, String> {
        self.c
            .prepare("SELECT phase_index, count(*) FROM cells WHERE generation = ?1 GROUP BY phase_index ORDER BY phase_index")
            .and_then(|mut s| s.query_map([generation], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| e.to_string())
    }

    /// (cells, verdicts) written in a generation.
    pub fn rows_of(&self, generation: i64) -> Result<(i64, i64), String> {
        let q = |sql: &str| {
            self.c
                .query_row(sql, [generation], |r| r.get::<_, i64>(0))
                .map_err(|e| e.to_string())
        };
        Ok((
            q("SELECT count(*) FROM cells WHERE generation = ?1")?,
            q("SELECT count(*) FROM verdicts WHERE generation = ?1")?,
        ))
    }

    /// The same rows (same tables, count and shape) inserted by a bare prepared-statement loop in
    /// one transaction into a fresh database made from the same migrations: a file beside, or a
    /// schema of its own in the same PostgreSQL server (dropped after).
    pub fn ceiling(&self, cells: i64, verdicts: i64, docs: usize) -> Result<f64, String> {
        let pg = self.c.dialect() == Dialect::Postgres;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let schema = format!("quire_ceiling_{:016x}", rand::random::<u64>());
        let target = if pg {
            super::pg_schema(&self.db, &schema, true).map_err(|e| e.to_string())?;
            super::url_with_schema(&self.db, &schema)
        } else {
            dir.path().join("ceiling.db").to_string_lossy().into_owned()
        };
        let measured = self.ceiling_in(&target, cells, verdicts, docs);
        if pg {
            super::pg_schema(&self.db, &schema, false).map_err(|e| e.to_string())?;
        }
        measured
    }

    fn ceiling_in(
        &self,
        target: &str,
        cells: i64,
        verdicts: i64,
        docs: usize,
    ) -> Result<f64, String> {
        let bench_db = &self.c;
        let pg = bench_db.dialect() == Dialect::Postgres;
        let db = super::Db::open(target, Default::default()).map_err(|e| e.to_string())?;
        let c = db.conn().map_err(|e| e.to_string())?;
        let cell_tpl: Vec<CellTemplate> = bench_db
        .prepare("SELECT field_key, version, value, source, phase_index, confidence, source_text, config_version, rule_type FROM cells WHERE pd_seq = (SELECT min(pd_seq) FROM cells) AND generation = 1")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?)))?.collect())
        .map_err(|e| e.to_string())?;
        let verdict_tpl: Vec<VerdictTemplate> = bench_db
        .prepare("SELECT field_key, phase_index, stage, outcome, suppressed, reason, mechanisms, value_hash FROM verdicts WHERE pd_seq = (SELECT min(pd_seq) FROM verdicts) AND generation = 1")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)))?.collect())
        .map_err(|e| e.to_string())?;
        if cell_tpl.is_empty() || verdict_tpl.is_empty() {
            return Err("no rows to model the ceiling on".into());
        }
        // The texts the template's verdicts refer to, copied with their ids; and how many texts
        // the run interned in all (measured right after the first run, so all of them are its):
        // the ceiling stores as many, so both sides write the same rows.
        let mechanism_ids = if pg {
            "SELECT CASE jsonb_typeof(e) WHEN 'array' THEN (e ->> 0)::bigint
                      WHEN 'number' THEN (e #>> '{}')::bigint END
             FROM verdicts v, jsonb_array_elements(v.mechanisms::jsonb) e"
        } else {
            "SELECT CASE e.type WHEN 'array' THEN json_extract(e.value, '$[0]') ELSE e.value END
             FROM verdicts v, json_each(v.mechanisms) e"
        };
        let tpl_interned: Vec<(i64, String)> = bench_db
            .prepare(&format!(
                "SELECT id, text FROM interned WHERE id IN (
                     SELECT stage FROM verdicts WHERE pd_seq = (SELECT min(pd_seq) FROM verdicts) AND generation = 1
                     UNION {mechanism_ids}
                     WHERE v.pd_seq = (SELECT min(pd_seq) FROM verdicts) AND v.generation = 1)"
            ))
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| e.to_string())?;
        let interned: i64 = bench_db
            .query_row("SELECT count(*) FROM interned", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        let now = crate::domain::ids::now_rfc3339();
        {
            // Parents, not timed.
            let tx = c.unchecked_transaction().map_err(|e| e.to_string())?;
            tx.execute(
                "INSERT INTO organizations(id, name, created_at) VALUES ('o', 'o', ?1)",
                [&now],
            )
            .map_err(|e| e.to_string())?;
            tx.execute(
            "INSERT INTO schemas(id, short_id, org_id, name, definition, fields, created_at, updated_at) VALUES ('s', 'SCH-0', 'o', 's', '{}', '[]', ?1, ?1)",
            [&now],
        )
        .map_err(|e| e.to_string())?;
            tx.execute(
            "INSERT INTO pipelines(id, org_id, schema_id, schema_name, name, status, fields, phase_count, document_count, created_at, updated_at)
             VALUES ('p', 'o', 's', 's', 'p', 'completed', '[]', 4, ?2, ?1, ?1)",
            params![now, docs as i64],
        )
        .map_err(|e| e.to_string())?;
            let mut d = tx.prepare("INSERT INTO documents(id, org_id, filename, mime_type, size_bytes, sha256, content, created_at) VALUES (?1, 'o', 'f', 'text/plain', 1, 'x', ?3, ?2)").map_err(|e| e.to_string())?;
            let mut pd = tx.prepare("INSERT INTO pipeline_docs(seq, id, pipeline_id, document_id, ordinal, status, created_at, updated_at) VALUES (?1, ?2, 'p', ?2, ?1, 'complete', ?3, ?3)").map_err(|e| e.to_string())?;
            for i in 0..docs {
                let did = format!("d{i}");
                d.execute(params![did, now, [0u8].as_slice()])
                    .map_err(|e| e.to_string())?;
                pd.execute(params![i as i64 + 1, did, now])
                    .map_err(|e| e.to_string())?;
            }
            drop(d);
            drop(pd);
            let mut i = tx
                .prepare("INSERT INTO interned(id, text) VALUES (?1, ?2)")
                .map_err(|e| e.to_string())?;
            for (id, text) in &tpl_interned {
                i.execute(params![id, text]).map_err(|e| e.to_string())?;
            }
            drop(i);
            if pg {
                // Explicit ids leave PostgreSQL's identity behind them; the timed texts follow.
                tx.execute_batch(
                    "SELECT setval(pg_get_serial_sequence('interned', 'id'), coalesce(max(id), 0) + 1, false) FROM interned",
                )
                .map_err(|e| e.to_string())?;
            }
            tx.commit().map_err(|e| e.to_string())?;
        }
        let started = Instant::now();
        let tx = c.unchecked_transaction().map_err(|e| e.to_string())?;
        {
            let mut ins_c = tx
            .prepare(
                "INSERT INTO cells(pd_seq, field_key, version, value, source, phase_index, generation, pass, confidence, source_text, config_version, rule_type, note, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, 1, ?7, ?8, ?9, ?10, NULL, ?11)",
            )
            .map_err(|e| e.to_string())?;
            let mut ins_v = tx
            .prepare(
                "INSERT INTO verdicts(pd_seq, field_key, phase_index, stage, generation, pass, outcome, suppressed, reason, mechanisms, value_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, 1, 1, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(|e| e.to_string())?;
            let mut ins_i = tx
                .prepare("INSERT INTO interned(text) VALUES (?1)")
                .map_err(|e| e.to_string())?;
            // The texts the run stored beyond the template's own, spread over the documents.
            let extra = (interned - tpl_interned.len() as i64).max(0);
            let per_doc = extra / docs.max(1) as i64 + 1;
            let mut left_i = if tpl_interned.is_empty() { 0 } else { extra };
            let (mut left_c, mut left_v) = (cells, verdicts);
            let mut seq = 1i64;
            let mut round = 0u64;
            while left_c > 0 || left_v > 0 || left_i > 0 {
                for k in 0..per_doc {
                    if left_i == 0 {
                        break;
                    }
                    let (_, tpl) = &tpl_interned[k as usize % tpl_interned.len()];
                    let text = format!("{tpl} {round}/{seq}/{k}");
                    ins_i.execute([text]).map_err(|e| e.to_string())?;
                    left_i -= 1;
                }
                for t in &cell_tpl {
                    if left_c == 0 {
                        break;
                    }
                    ins_c
                        .execute(params![
                            seq, t.0, t.1, t.2, t.3, t.4, t.5, t.6, t.7, t.8, now
                        ])
                        .map_err(|e| e.to_string())?;
                    left_c -= 1;
                }
                for t in &verdict_tpl {
                    if left_v == 0 {
                        break;
                    }
                    ins_v
                        .execute(params![seq, t.0, t.1, t.2, t.3, t.4, t.5, t.6, t.7, now])
                        .map_err(|e| e.to_string())?;
                    left_v -= 1;
                }
                if seq == docs as i64 {
                    round += 1;
                }
                seq = seq % docs as i64 + 1;
            }
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok((cells + verdicts) as f64 / started.elapsed().as_secs_f64())
    }
}
