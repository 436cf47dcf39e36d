//! Versioned migrations: `migrations/NNNN_name.sql`, embedded in the binary, each applied once,
//! in order, and recorded with the SHA-256 of its text. A database whose applied migration no
//! longer matches the binary's file is refused at start: an edited migration would otherwise
//! leave databases migrated before and after the edit quietly different.
//!
//! PostgreSQL has its own texts under `migrations/pg/`, with the same versions and names: its
//! store began at version 17, so `pg/0001_initial.sql` is that whole schema and 0002–0017 are
//! comments. Its ledger is the same table, and its version is the ledger's highest.

use super::conn::{params, Connection, OptionalExtension};
use super::StoreError;
use sha2::{Digest, Sha256};

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
    /// The same step in PostgreSQL's dialect.
    pub pg: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal, $file:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../migrations/", $file)),
            pg: include_str!(concat!("../../migrations/pg/", $file)),
        }
    };
}

/// Every migration, in order. A test checks that this list and the `migrations/` folder agree
/// (file `NNNN_name.sql` for version N).
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "initial", "0001_initial.sql"),
    migration!(2, "queue_indexes", "0002_queue_indexes.sql"),
    migration!(3, "decision_judged_pass", "0003_decision_judged_pass.sql"),
    migration!(4, "crash_accounting", "0004_crash_accounting.sql"),
    migration!(5, "text_layers", "0005_text_layers.sql"),
    migration!(6, "cell_provenance", "0006_cell_provenance.sql"),
    migration!(7, "model_calls", "0007_model_calls.sql"),
    migration!(8, "quick_tier", "0008_quick_tier.sql"),
    migration!(9, "webhooks", "0009_webhooks.sql"),
    migration!(10, "retention", "0010_retention.sql"),
    migration!(11, "status_counts", "0011_status_counts.sql"),
    migration!(12, "lazy_rerun", "0012_lazy_rerun.sql"),
    migration!(13, "interned_verdicts", "0013_interned_verdicts.sql"),
    migration!(14, "short_field_states", "0014_short_field_states.sql"),
    migration!(15, "line_items", "0015_line_items.sql"),
    migration!(16, "lazy_held", "0016_lazy_held.sql"),
    migration!(17, "held_counts", "0017_held_counts.sql"),
    migration!(18, "nodes", "0018_nodes.sql"),
    migration!(19, "rate_buckets", "0019_rate_buckets.sql"),
];

pub fn latest_version() -> i64 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

impl Migration {
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }

    fn pg_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.pg.as_bytes()))
    }

    fn file(&self) -> String {
        format!("migrations/{:04}_{}.sql", self.version, self.name)
    }
}

/// The record of applied migrations. Not a migration itself: it must exist before any is
/// recorded, including on databases made before migrations were recorded.
const LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    applied_at TEXT NOT NULL
)";

/// Checks the recorded checksums of the migrations a database has (`current` = its
/// `user_version`). Versions applied before checksums were recorded are adopted when `adopt`
/// (the database is writable); their text cannot be checked any more.
pub fn verify(c: &Connection, current: i64, adopt: bool, shown: &str) -> Result<(), StoreError> {
    let has_ledger: bool = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)?;
    if !has_ledger && !adopt {
        return Ok(());
    }
    if adopt {
        c.execute(LEDGER, [])?;
    }
    for m in MIGRATIONS.iter().filter(|m| m.version <= current) {
        let recorded: Option<String> = if has_ledger {
            c.query_row(
                "SELECT sha256 FROM schema_migrations WHERE version = ?1",
                [m.version],
                |r| r.get(0),
            )
            .optional()?
        } else {
            None
        };
        match recorded {
            Some(sha) if sha != m.sha256() => {
                return Err(StoreError::Refused(format!(
                    "{shown}: migration {} ({}) was applied from a text that differs from this binary's {} \
                     (sha256 recorded {sha}, now {}); refusing to start on it — a migration must never be edited once released",
                    m.version,
                    m.name,
                    m.file(),
                    m.sha256()
                )))
            }
            Some(_) => {}
            None if adopt => record(c, m, "adopted")?,
            None => {}
        }
    }
    Ok(())
}

fn record(c: &Connection, m: &Migration, when: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO schema_migrations(version, name, sha256, applied_at) VALUES (?1, ?2, ?3, ?4)",
        params![m.version, m.name, m.sha256(), when],
    )?;
    Ok(())
}

/// The ledger in PostgreSQL's dialect (the same table as `pg/0001_initial.sql` declares).
const PG_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT COLLATE \"C\" NOT NULL,
    sha256     TEXT COLLATE \"C\" NOT NULL,
    applied_at TEXT COLLATE \"C\" NOT NULL
)";

/// Brings the PostgreSQL schema of `c` (its `search_path`) to the binary's latest version, in
/// one transaction under the writers' lock, so that two processes starting together migrate
/// once: checks the recorded checksums, then applies and records what is missing. Refuses a
/// schema that holds tables but no ledger (not Quire's), one a newer binary migrated, and an
/// applied migration whose text changed. Answers the version the schema had.
pub fn migrate_pg(c: &mut Connection, shown: &str) -> Result<i64, StoreError> {
    let tx = c.begin_immediate()?;
    let tables: i64 = tx.query_row(
        "SELECT count(*)::bigint FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_name <> 'schema_migrations'",
        [],
        |r| r.get(0),
    )?;
    let has_ledger: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_name = 'schema_migrations')",
        [],
        |r| r.get(0),
    )?;
    if !has_ledger && tables > 0 {
        return Err(StoreError::Refused(format!(
            "{shown}: the schema holds {tables} tables but no schema_migrations: not a Quire database \
             (point Quire at an empty database or schema)"
        )));
    }
    tx.execute(PG_LEDGER, [])?;
    let current: i64 = tx.query_row(
        "SELECT coalesce(max(version), 0)::bigint FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    if current > latest_version() {
        return Err(StoreError::Refused(format!(
            "{shown}: the schema is at migration {current}, newer than this binary's {}; \
             run a newer Quire",
            latest_version()
        )));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version <= current) {
        let recorded: Option<String> = tx
            .query_row(
                "SELECT sha256 FROM schema_migrations WHERE version = ?1",
                [m.version],
                |r| r.get(0),
            )
            .optional()?;
        if recorded.as_deref() != Some(m.pg_sha256().as_str()) {
            return Err(StoreError::Refused(format!(
                "{shown}: migration {} ({}) was applied from a text that differs from this binary's \
                 migrations/pg/{:04}_{}.sql (sha256 recorded {}, now {}); refusing to start on it",
                m.version,
                m.name,
                m.version,
                m.name,
                recorded.as_deref().unwrap_or("nothing"),
                m.pg_sha256()
            )));
        }
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.execute_batch(m.pg)?;
        tx.execute(
            "INSERT INTO schema_migrations(version, name, sha256, applied_at) VALUES (?1, ?2, ?3, ?4)",
            params![m.version, m.name, m.pg_sha256(), crate::domain::ids::now_rfc3339()],
        )?;
        tracing::info!("applied PostgreSQL migration {} ({})", m.version, m.name);
    }
    tx.commit()?;
    Ok(current)
}

/// Applies every migration after `current`, recording each; the caller owns the transaction.
pub fn apply_after(c: &Connection, current: i64) -> Result<(), StoreError> {
    c.execute(LEDGER, [])?;
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        c.execute_batch(m.sql)?;
        record(c, m, &crate::domain::ids::now_rfc3339())?;
        c.sqlite()?.pragma_update(None, "user_version", m.version)?;
        tracing::info!("applied database migration {} ({})", m.version, m.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Db, OpenOptions, APPLICATION_ID};

    #[test]
    fn the_list_names_every_file_in_the_migrations_folder_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let files_of = |dir: &str| {
            let mut files: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.file_type().unwrap().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            files
        };
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| m.file().trim_start_matches("migrations/").to_string())
            .collect();
        assert_eq!(files_of(dir), listed);
        assert_eq!(files_of(&format!("{dir}/pg")), listed, "PostgreSQL's texts");
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version,
                i as i64 + 1,
                "versions are 1, 2, 3, … without gaps"
            );
        }
    }

    /// The schema as SQLite describes it, internal tables aside.
    fn shape(path: &std::path::Path) -> Vec<(String, String, String)> {
        let c = Connection::open(path).unwrap();
        let mut q = c
            .prepare(
                "SELECT type, name, coalesce(sql, '') FROM sqlite_master
                 WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
            )
            .unwrap();
        let rows = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows
    }

    /// A database as a binary that knew migrations up to `version` left it: before this
    /// module existed, with no ledger.
    fn old_database(path: &std::path::Path, version: i64) {
        let c = Connection::open(path).unwrap();
        for m in MIGRATIONS.iter().filter(|m| m.version <= version) {
            c.execute_batch(m.sql).unwrap();
        }
        c.sqlite()
            .unwrap()
            .pragma_update(None, "user_version", version)
            .unwrap();
        c.sqlite()
            .unwrap()
            .pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
    }

    /// One organization, schema, run and document: the parents of a document's rows (seq 1).
    fn one_document(c: &Connection) {
        c.execute_batch(
            "INSERT INTO organizations(id, name, created_at) VALUES ('o', 'o', 't');
             INSERT INTO schemas(id, short_id, org_id, name, definition, fields, created_at, updated_at)
             VALUES ('s', 'SCH-0', 'o', 's', '{}', '[]', 't', 't');
             INSERT INTO pipelines(id, org_id, schema_id, schema_name, name, status, fields, phase_count, document_count, created_at, updated_at)
             VALUES ('p', 'o', 's', 's', 'p', 'completed', '[]', 4, 1, 't', 't');
             INSERT INTO documents(id, org_id, filename, mime_type, size_bytes, sha256, content, created_at)
             VALUES ('d', 'o', 'f', 'text/plain', 1, 'x', x'00', 't');
             INSERT INTO pipeline_docs(seq, id, pipeline_id, document_id, ordinal, status, created_at, updated_at)
             VALUES (1, 'pd', 'p', 'd', 1, 'complete', 't', 't');",
        )
        .unwrap();
    }

    #[test]
    fn a_database_of_every_earlier_version_upgrades_to_the_fresh_schema() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.db");
        drop(Db::open(fresh.to_str().unwrap(), OpenOptions::default()).unwrap());
        let want = shape(&fresh);
        assert!(want.iter().any(|t| t.1 == "schema_migrations"));
        for v in 1..latest_version() {
            let path = dir.path().join(format!("v{v}.db"));
            old_database(&path, v);
            let db = Db::open(path.to_str().unwrap(), OpenOptions::default()).unwrap();
            drop(db);
            assert_eq!(shape(&path), want, "upgraded from version {v}");
            let c = Connection::open(&path).unwrap();
            let recorded: Vec<(i64, String)> = c
                .prepare("SELECT version, sha256 FROM schema_migrations ORDER BY version")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let expected: Vec<(i64, String)> =
                MIGRATIONS.iter().map(|m| (m.version, m.sha256())).collect();
            assert_eq!(
                recorded, expected,
                "every version recorded with its checksum"
            );
        }
    }

    #[test]
    fn verdicts_stored_before_interning_read_back_the_same_after_migration_13() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v12.db");
        old_database(&path, 12);
        let min_conf = r#"{"validatorType":"min_confidence","verdict":"pass","confidence":0.95,"reasoning":"confidence 0.95 vs threshold 0.5"}"#;
        let rule = r#"{"validatorType":"business_rules","verdict":"fail","confidence":null,"reasoning":"regex: \"INV-1\" does not match"}"#;
        let stored = [
            ("a", format!("[{min_conf}]")),
            ("a", format!("[{rule},{min_conf}]")),
            ("b", "[]".to_string()),
        ];
        {
            let c = Connection::open(&path).unwrap();
            one_document(&c);
            for (stage, mechanisms) in &stored {
                c.execute(
                    "INSERT INTO verdicts(pd_seq, field_key, phase_index, stage_id, generation, pass, outcome, mechanisms, value_hash, created_at)
                     VALUES (1, 'total', 3, ?1, 1, 1, 'pass', ?2, 'h', 't')",
                    params![stage, mechanisms],
                )
                .unwrap();
            }
        }
        let db = Db::open(path.to_str().unwrap(), OpenOptions::default()).unwrap();
        let c = db.conn().unwrap();
        let read = crate::store::pipelines::verdicts(&c, 1).unwrap();
        let got: Vec<(String, serde_json::Value)> = read
            .into_iter()
            .map(|v| (v.stage_id, v.mechanisms))
            .collect();
        let want: Vec<(String, serde_json::Value)> = stored
            .iter()
            .map(|(s, m)| (s.to_string(), serde_json::from_str(m).unwrap()))
            .collect();
        assert_eq!(got, want);
        let texts: i64 = c
            .query_row("SELECT count(*) FROM interned", [], |r| r.get(0))
            .unwrap();
        assert_eq!(texts, 4, "two stage ids and two mechanisms, each once");
    }

    #[test]
    fn the_flag_index_sees_flags_beside_short_field_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let db = Db::open(path.to_str().unwrap(), OpenOptions::default()).unwrap();
        let c = db.conn().unwrap();
        one_document(&c);
        let flagged = |phase: usize| {
            let mut s = crate::domain::state::FieldState {
                status: crate::domain::state::Status::Completed,
                next: 5,
                ..Default::default()
            };
            s.flags.push(crate::domain::state::Flag {
                phase,
                stage_id: "g".into(),
                severity: "warning".into(),
                reason: "r".into(),
            });
            s
        };
        let plain = crate::domain::state::FieldState {
            status: crate::domain::state::Status::Completed,
            next: 5,
            ..Default::default()
        };
        let set = |states: &crate::domain::state::States| -> Option<i64> {
            c.execute(
                "UPDATE pipeline_docs SET field_states = ?1 WHERE seq = 1",
                [crate::store::states::encode(states)],
            )
            .unwrap();
            c.query_row(
                "SELECT flag_phase FROM pipeline_docs WHERE seq = 1",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        let mixed: crate::domain::state::States = [
            ("a".to_string(), plain.clone()),
            ("b".to_string(), flagged(3)),
            ("c".to_string(), flagged(2)),
            ("d".to_string(), plain.clone()),
        ]
        .into();
        assert_eq!(
            set(&mixed),
            Some(2),
            "the lowest flag phase, past short states"
        );
        let none: crate::domain::state::States = [("a".to_string(), plain)].into();
        assert_eq!(set(&none), None, "no flags left");
    }

    #[test]
    fn a_database_whose_applied_migration_text_changed_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        drop(Db::open(path.to_str().unwrap(), OpenOptions::default()).unwrap());
        let c = Connection::open(&path).unwrap();
        c.execute(
            "UPDATE schema_migrations SET sha256 = 'edited' WHERE version = 2",
            [],
        )
        .unwrap();
        drop(c);
        let before = std::fs::read(&path).unwrap();
        let err = match Db::open(path.to_str().unwrap(), OpenOptions::default()) {
            Ok(_) => panic!("an edited migration must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("migration 2 (queue_indexes)")
                && err.contains("migrations/0002_queue_indexes.sql"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the file is untouched"
        );
        // Read-only, it is checked all the same.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let err = match Db::open(path.to_str().unwrap(), OpenOptions::default()) {
            Ok(_) => panic!("an edited migration must be refused on a read-only file too"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("migration 2 (queue_indexes)"), "{err}");
    }
}
