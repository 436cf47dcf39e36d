use super::conn::{params, Connection, DbResult, Row};
use super::sql::{self, Elem, Sql};
use super::{optional, StoreError};
use crate::domain::ids::{new_id, now_rfc3339};
use crate::domain::rail::{Phase, PhaseType};
use crate::domain::schema::FieldDef;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct PipelineRow {
    pub seq: i64,
    pub id: String,
    pub schema_id: String,
    pub schema_name: String,
    pub name: String,
    pub status: crate::domain::status::RunStatus,
    pub generation: i64,
    pub fields: Vec<FieldDef>,
    pub phase_count: i64,
    pub document_count: i64,
    pub created_at: String,
    pub updated_at: String,
    pub completed_at: Option<String>,
    /// `pipeline` (governed), `extraction` or `job` (the quick tier).
    pub kind: String,
    /// The quick tier's request options (`include_markdown`, `include_provenance`).
    pub options: Value,
}

const COLS: &str = "seq, id, schema_id, schema_name, name, status, generation, fields, phase_count, document_count, created_at, updated_at, completed_at, kind, options";

fn row(r: &Row) -> DbResult<PipelineRow> {
    Ok(PipelineRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        schema_id: r.get(2)?,
        schema_name: r.get(3)?,
        name: r.get(4)?,
        status: r.get(5)?,
        generation: r.get(6)?,
        fields: super::json(r, 7, "pipelines")?,
        phase_count: r.get(8)?,
        document_count: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        completed_at: r.get(12)?,
        kind: r.get(13)?,
        options: super::json(r, 14, "pipelines")?,
    })
}

pub struct NewPipeline<'a> {
    pub org_id: &'a str,
    pub schema_id: &'a str,
    pub schema_name: &'a str,
    pub name: &'a str,
    pub fields: &'a [FieldDef],
    pub phases: &'a [(Phase, Value)],
    pub document_ids: &'a [uuid::Uuid],
    pub kind: &'a str,
    pub options: &'a Value,
}

pub fn insert(c: &Connection, p: NewPipeline) -> Result<PipelineRow, StoreError> {
    let id = new_id();
    let now = now_rfc3339();
    c.execute(
        "INSERT INTO pipelines(id, org_id, schema_id, schema_name, name, status, generation, fields, phase_count, document_count, created_at, updated_at, kind, options)
         VALUES (?1, ?2, ?3, ?4, ?5, 'active', 1, ?6, ?7, ?8, ?9, ?9, ?10, ?11)",
        params![
            id,
            p.org_id,
            p.schema_id,
            p.schema_name,
            p.name,
            serde_json::to_string(p.fields).unwrap_or_default(),
            p.phases.len() as i64,
            p.document_ids.len() as i64,
            now,
            p.kind,
            p.options.to_string()
        ],
    )?;
    {
        let mut ph = c.prepare_cached("INSERT INTO pipeline_phases(pipeline_id, idx, phase_id, type, name, ref_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        let mut sn = c.prepare_cached("INSERT INTO phase_snapshots(pipeline_id, idx, config_version, generation, config) VALUES (?1, ?2, 1, 1, ?3)")?;
        for (phase, snap) in p.phases {
            ph.execute(params![
                id,
                phase.index as i64,
                phase.phase_id,
                phase.kind.as_str(),
                phase.name,
                phase.ref_id
            ])?;
            sn.execute(params![id, phase.index as i64, snap.to_string()])?;
        }
        let mut pd = c.prepare_cached(
            "INSERT INTO pipeline_docs(id, pipeline_id, document_id, ordinal, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?5)",
        )?;
        let mut buf = uuid::Uuid::encode_buffer();
        for (i, d) in p.document_ids.iter().enumerate() {
            let d: &str = d.hyphenated().encode_lower(&mut buf);
            pd.execute(params![new_id(), id, d, i as i64, now])?;
        }
    }
    get_any(c, &id)?.ok_or_else(|| StoreError::Refused("pipeline vanished".into()))
}

pub fn get(c: &Connection, org_id: &str, id: &str) -> Result<Option<PipelineRow>, StoreError> {
    let sql = format!("SELECT {COLS} FROM pipelines WHERE id = ?1 AND org_id = ?2");
    optional(c.prepare_cached(&sql)?.query_row(params![id, org_id], row))
}

pub fn get_any(c: &Connection, id: &str) -> Result<Option<PipelineRow>, StoreError> {
    let sql = format!("SELECT {COLS} FROM pipelines WHERE id = ?1");
    optional(c.prepare_cached(&sql)?.query_row(params![id], row))
}

pub fn list(
    c: &Connection,
    org_id: &str,
    status: Option<&str>,
    schema_id: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<PipelineRow>, i64), StoreError> {
    let d = c.dialect();
    let filter = format!(
        "org_id = ?1 AND kind != 'extraction' AND ({} OR status = ?2) AND ({} OR schema_id = ?3)",
        sql::is_null(d, 2, "text"),
        sql::is_null(d, 3, "text")
    );
    let sql = format!(
        "SELECT {COLS} FROM pipelines WHERE {filter} AND seq < ?4 ORDER BY seq DESC LIMIT ?5"
    );
    let rows = c
        .prepare_cached(&sql)?
        .query_map(
            params![org_id, status, schema_id, before.unwrap_or(i64::MAX), limit],
            row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let total = c.query_row(
        &format!("SELECT count(*) FROM pipelines WHERE {filter}"),
        params![org_id, status, schema_id],
        |r| r.get(0),
    )?;
    Ok((rows, total))
}

/// The organization's runs of one kind (the quick tier's jobs), newest first, optionally only
/// those whose run status is one of `statuses`.
pub fn list_of_kind(
    c: &Connection,
    org_id: &str,
    kind: &str,
    statuses: Option<&[&str]>,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<PipelineRow>, i64), StoreError> {
    let wanted = statuses.map(|s| serde_json::to_string(s).unwrap_or_default());
    let d = c.dialect();
    let filter = format!(
        "org_id = ?1 AND kind = ?2 AND ({} OR status IN ({}))",
        sql::is_null(d, 3, "text"),
        sql::in_list(d, 3, Elem::Text)
    );
    let sql = format!(
        "SELECT {COLS} FROM pipelines WHERE {filter} AND seq < ?4 ORDER BY seq DESC LIMIT ?5"
    );
    let rows = c
        .prepare_cached(&sql)?
        .query_map(
            params![org_id, kind, wanted, before.unwrap_or(i64::MAX), limit],
            row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let total = c.query_row(
        &format!("SELECT count(*) FROM pipelines WHERE {filter}"),
        params![org_id, kind, wanted],
        |r| r.get(0),
    )?;
    Ok((rows, total))
}

/// The organization's extractions, newest first: of one document, and whose document status
/// is one of `statuses`, when given.
pub fn list_extractions(
    c: &Connection,
    org_id: &str,
    document_id: Option<&str>,
    statuses: Option<&[&str]>,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<PipelineRow>, i64), StoreError> {
    let wanted = statuses.map(|s| serde_json::to_string(s).unwrap_or_default());
    let d = c.dialect();
    let filter = format!(
        "p.org_id = ?1 AND p.kind = 'extraction'
        AND ({} OR pd.document_id = ?2)
        AND ({} OR pd.status IN ({}))",
        sql::is_null(d, 2, "text"),
        sql::is_null(d, 3, "text"),
        sql::in_list(d, 3, Elem::Text)
    );
    let cols = COLS
        .split(", ")
        .map(|c| format!("p.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {cols} FROM pipelines p JOIN pipeline_documents pd ON pd.pipeline_id = p.id
         WHERE {filter} AND p.seq < ?4 ORDER BY p.seq DESC LIMIT ?5"
    );
    let rows = c
        .prepare_cached(&sql)?
        .query_map(
            params![
                org_id,
                document_id,
                wanted,
                before.unwrap_or(i64::MAX),
                limit
            ],
            row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let total = c.query_row(
        &format!(
            "SELECT count(*) FROM pipelines p JOIN pipeline_documents pd ON pd.pipeline_id = p.id WHERE {filter}"
        ),
        params![org_id, document_id, wanted],
        |r| r.get(0),
    )?;
    Ok((rows, total))
}

#[derive(Debug, Clone)]
pub struct PhaseRow {
    pub index: usize,
    pub phase_id: String,
    pub kind: PhaseType,
    pub name: String,
    pub ref_id: Option<String>,
}

pub fn phases(c: &Connection, pipeline_id: &str) -> Result<Vec<PhaseRow>, StoreError> {
    let rows = c
        .prepare_cached("SELECT idx, phase_id, type, name, ref_id FROM pipeline_phases WHERE pipeline_id = ?1 ORDER BY idx")?
        .query_map([pipeline_id], |r| {
            let t: String = r.get(2)?;
            Ok(PhaseRow {
                index: r.get::<_, i64>(0)? as usize,
                phase_id: r.get(1)?,
                kind: PhaseType::parse(&t).unwrap_or(PhaseType::Extraction),
                name: r.get(3)?,
                ref_id: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Each phase's newest snapshot taken at a generation <= `generation`: `(config_version, config)`.
pub fn snapshots(
    c: &Connection,
    pipeline_id: &str,
    generation: i64,
) -> Result<Vec<(usize, i64, Value)>, StoreError> {
    let rows = c
        .prepare_cached(
            "SELECT s.idx, s.config_version, s.config FROM phase_snapshots s
             WHERE s.pipeline_id = ?1 AND s.config_version = (
               SELECT max(config_version) FROM phase_snapshots x WHERE x.pipeline_id = s.pipeline_id AND x.idx = s.idx AND x.generation <= ?2)
             ORDER BY s.idx",
        )?
        .query_map(params![pipeline_id, generation], |r| {
            Ok((r.get::<_, i64>(0)? as usize, r.get(1)?, super::json(r, 2, "phase_snapshots")?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// How many of the run's documents share a status, cursor and error phase.
#[derive(Debug, Clone)]
pub struct StatusGroup {
    pub status: crate::domain::status::DocStatus,
    pub cursor: i64,
    pub error_phase_index: Option<i64>,
    pub count: i64,
}

pub fn status_counts(c: &Connection, pipeline_id: &str) -> Result<Vec<StatusGroup>, StoreError> {
    // A document of a generation before the run's open lazy reset counts as the reset leaves it:
    // queued at the restart (the same rule as the `pipeline_documents` view).
    static COUNTS: Sql = Sql::new(|d| {
        format!(
            "SELECT CASE WHEN s.generation < p.lazy_generation THEN 'queued' ELSE s.status END,
                    CASE WHEN s.generation < p.lazy_generation THEN
                        CASE WHEN s.status = 'error' THEN {} ELSE p.lazy_from END
                    ELSE s.cursor END,
                    CASE WHEN s.generation < p.lazy_generation THEN NULL ELSE nullif(s.error_phase, -1) END,
                    {}
             FROM pipeline_status_counts s JOIN pipelines p ON p.id = s.pipeline_id
             WHERE s.pipeline_id = ?1 AND s.count > 0 GROUP BY 1, 2, 3",
            sql::least(d, "p.lazy_from", &sql::greatest(d, "s.error_phase", "0")),
            sql::sum_int(d, "s.count")
        )
    });
    let rows = c
        .prepare_cached(COUNTS.text(c.dialect()))?
        .query_map([pipeline_id], |r| {
            Ok(StatusGroup {
                status: r.get(0)?,
                cursor: r.get(1)?,
                error_phase_index: r.get(2)?,
                count: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Documents of a run whose status (as readers see it) is one of `statuses`, from the counters.
fn counted(c: &Connection, pipeline_id: &str, statuses: &[&str]) -> Result<i64, StoreError> {
    Ok(status_counts(c, pipeline_id)?
        .iter()
        .filter(|g| statuses.contains(&g.status.as_str()))
        .map(|g| g.count)
        .sum())
}

#[derive(Debug, Clone)]
pub struct DocError {
    pub pd_id: String,
    pub document_id: String,
    pub filename: String,
    pub phase_index: Option<i64>,
    pub message: Option<String>,
}

pub fn errors(c: &Connection, pipeline_id: &str, limit: i64) -> Result<Vec<DocError>, StoreError> {
    let rows = c
        .prepare_cached(
            "SELECT pd.id, pd.document_id, d.filename, pd.error_phase_index, pd.error FROM pipeline_docs pd
             JOIN documents d ON d.id = pd.document_id JOIN pipelines p ON p.id = pd.pipeline_id
             WHERE pd.pipeline_id = ?1 AND pd.status = 'error' AND pd.generation >= p.lazy_generation
             ORDER BY pd.ordinal LIMIT ?2",
        )?
        .query_map(params![pipeline_id, limit], |r| {
            Ok(DocError { pd_id: r.get(0)?, document_id: r.get(1)?, filename: r.get(2)?, phase_index: r.get(3)?, message: r.get(4)? })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[derive(Debug, Clone)]
pub struct PipelineDoc {
    pub seq: i64,
    pub id: String,
    pub document_id: String,
    pub filename: String,
    pub ordinal: i64,
    pub status: crate::domain::status::DocStatus,
    pub cursor: i64,
    pub generation: i64,
    pub pass: i64,
    pub error: Option<String>,
    pub error_phase_index: Option<i64>,
    pub field_states: crate::domain::state::States,
    pub restarts: Vec<(i64, usize)>,
    pub updated_at: String,
    pub completed_at: Option<String>,
    /// Why a queued document is not claimed yet (it waits for a model's answer).
    pub waiting_for: Option<String>,
}

const PD_COLS: &str = "pd.seq, pd.id, pd.document_id, d.filename, pd.ordinal, pd.status, pd.cursor, pd.generation, pd.pass,
    pd.error, pd.error_phase_index, pd.field_states, pd.restarts, pd.updated_at, pd.completed_at, pd.waiting_for";

fn pd_row(r: &Row) -> DbResult<PipelineDoc> {
    Ok(PipelineDoc {
        seq: r.get(0)?,
        id: r.get(1)?,
        document_id: r.get(2)?,
        filename: r.get(3)?,
        ordinal: r.get(4)?,
        status: r.get(5)?,
        cursor: r.get(6)?,
        generation: r.get(7)?,
        pass: r.get(8)?,
        error: r.get(9)?,
        error_phase_index: r.get(10)?,
        field_states: super::states::column(r, 11, "pipeline_documents")?,
        restarts: super::json(r, 12, "pipeline_documents")?,
        updated_at: r.get(13)?,
        completed_at: r.get(14)?,
        waiting_for: r.get(15)?,
    })
}

/// Every delivered run (complete or partial pipeline document) of the organization's live
/// documents, with the fields each run extracted: newest document first, and within a
/// document its newest run first.
pub fn delivered(
    c: &Connection,
    org_id: &str,
) -> Result<Vec<(PipelineDoc, Vec<FieldDef>)>, StoreError> {
    let sql = format!(
        "SELECT {PD_COLS}, p.fields FROM pipeline_documents pd
         JOIN documents d ON d.id = pd.document_id JOIN pipelines p ON p.id = pd.pipeline_id
         WHERE p.org_id = ?1 AND d.deleted_at IS NULL AND pd.status IN ('complete', 'partial')
         ORDER BY d.seq DESC, pd.seq DESC"
    );
    let rows = c
        .prepare_cached(&sql)?
        .query_map([org_id], |r| {
            Ok((pd_row(r)?, super::json(r, 16, "pipelines")?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A page of the run's documents in input order, optionally only one document.
pub fn documents(
    c: &Connection,
    pipeline_id: &str,
    after: Option<i64>,
    limit: i64,
    document_id: Option<&str>,
) -> Result<Vec<PipelineDoc>, StoreError> {
    let sql = format!(
        "SELECT {PD_COLS} FROM pipeline_documents pd JOIN documents d ON d.id = pd.document_id
         WHERE pd.pipeline_id = ?1 AND pd.ordinal > ?2 AND ({} OR pd.document_id = ?3) ORDER BY pd.ordinal LIMIT ?4",
        sql::is_null(c.dialect(), 3, "text")
    );
    let rows = c
        .prepare_cached(&sql)?
        .query_map(
            params![pipeline_id, after.unwrap_or(-1), document_id, limit],
            pd_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn document(
    c: &Connection,
    pipeline_id: &str,
    pd_id: &str,
) -> Result<Option<PipelineDoc>, StoreError> {
    let sql = format!(
        "SELECT {PD_COLS} FROM pipeline_documents pd JOIN documents d ON d.id = pd.document_id
         WHERE pd.pipeline_id = ?1 AND pd.id = ?2"
    );
    optional(
        c.prepare_cached(&sql)?
            .query_row(params![pipeline_id, pd_id], pd_row),
    )
}

#[derive(Debug, Clone)]
pub struct CellRow {
    pub seq: i64,
    pub pd_seq: i64,
    pub cell: crate::domain::cells::Cell,
    pub created_at: String,
}

/// Each document's cells as `(seq, cell, created_at)`, oldest first, keyed by document seq.
pub type CellsByDoc =
    std::collections::HashMap<i64, Vec<(i64, crate::domain::cells::Cell, String)>>;

pub fn cells_by_doc(c: &Connection, pd_seqs: &[i64]) -> Result<CellsByDoc, StoreError> {
    cells_by_doc_with(c, pd_seqs, true)
}

/// `cells_by_doc`, leaving every cell's provenance out unless `with_provenance`: a page of
/// results that does not show it need not parse 1,400 JSON objects for nothing.
pub fn cells_by_doc_with(
    c: &Connection,
    pd_seqs: &[i64],
    with_provenance: bool,
) -> Result<CellsByDoc, StoreError> {
    let mut out = CellsByDoc::new();
    for r in cells_with(c, pd_seqs, with_provenance)? {
        out.entry(r.pd_seq)
            .or_default()
            .push((r.seq, r.cell, r.created_at));
    }
    Ok(out)
}

/// Cells of the given pipeline documents, oldest first.
pub fn cells(c: &Connection, pd_seqs: &[i64]) -> Result<Vec<CellRow>, StoreError> {
    cells_with(c, pd_seqs, true)
}

pub fn cells_with(
    c: &Connection,
    pd_seqs: &[i64],
    with_provenance: bool,
) -> Result<Vec<CellRow>, StoreError> {
    if pd_seqs.is_empty() {
        return Ok(Vec::new());
    }
    // Any number of documents pass as one JSON list, through one cached statement. The rows
    // come in `cells_pd` order (document, field, version) and are sorted here: for a page's
    // 1,400–1,800 versions SQLite's sorter would copy every record once more.
    let list = serde_json::to_string(pd_seqs).unwrap_or_else(|_| "[]".into());
    static CELLS: Sql = Sql::new(|d| {
        format!(
            "SELECT seq, pd_seq, field_key, version, value, source, phase_index, generation, pass, confidence, source_text,
         config_version, rule_type, note, created_at, CASE WHEN ?2 THEN provenance END,
         CASE WHEN ?2 THEN rows END FROM cells WHERE pd_seq IN ({})",
            sql::in_list(d, 1, Elem::Int)
        )
    });
    let mut st = c.prepare_cached(CELLS.text(c.dialect()))?;
    let mut rows: Vec<CellRow> = st
        .query_map(params![list, with_provenance], |r| {
            Ok(CellRow {
                seq: r.get(0)?,
                pd_seq: r.get(1)?,
                cell: cell_of(r)?,
                created_at: r.get(14)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.sort_unstable_by_key(|r| (r.pd_seq, r.seq));
    Ok(rows)
}

/// Each document's newest version of each field (the last by seq, the first `canonical`
/// considers), oldest first, without provenance, keyed by document seq: what a page of results
/// shows when each of those versions is the one that counts (see `views::load_shown`). A page
/// then decodes one row per field, not every version of every generation.
pub fn newest_cells_by_doc(c: &Connection, pd_seqs: &[i64]) -> Result<CellsByDoc, StoreError> {
    let mut out = CellsByDoc::new();
    if pd_seqs.is_empty() {
        return Ok(out);
    }
    let list = serde_json::to_string(pd_seqs).unwrap_or_else(|_| "[]".into());
    // The newest seqs come from `cells_pd` alone (a seq is the rowid, in every index entry);
    // only their rows are read.
    static NEWEST: Sql = Sql::new(|d| {
        format!(
            "SELECT seq, pd_seq, field_key, version, value, source, phase_index, generation, pass, confidence, source_text,
         config_version, rule_type, note, created_at, NULL, NULL FROM cells
         WHERE seq IN (SELECT max(seq) FROM cells WHERE pd_seq IN ({})
                       GROUP BY pd_seq, field_key)",
            sql::in_list(d, 1, Elem::Int)
        )
    });
    let mut st = c.prepare_cached(NEWEST.text(c.dialect()))?;
    let rows = st.query_map([list], |r| {
        Ok((r.get::<_, i64>(1)?, cell_of(r)?, r.get::<_, String>(14)?))
    })?;
    for row in rows {
        let (pd_seq, cell, created_at) = row?;
        out.entry(pd_seq)
            .or_default()
            .push((cell.seq, cell, created_at));
    }
    for cells in out.values_mut() {
        cells.sort_unstable_by_key(|(seq, _, _)| *seq);
    }
    Ok(out)
}

/// The version in a row whose columns start as `cells_with` selects them.
fn cell_of(r: &Row) -> DbResult<crate::domain::cells::Cell> {
    Ok(crate::domain::cells::Cell {
        seq: r.get(0)?,
        field: r.get(2)?,
        version: r.get(3)?,
        value: super::json_opt(r, 4, "cells")?.unwrap_or(Value::Null),
        source: r.get(5)?,
        phase_index: r.get::<_, i64>(6)? as usize,
        generation: r.get(7)?,
        pass: r.get(8)?,
        confidence: r.get(9)?,
        source_text: r.get(10)?,
        config_version: r.get(11)?,
        rule_type: r.get(12)?,
        note: r.get(13)?,
        provenance: super::json_opt(r, 15, "cells")?,
        rows: super::json_opt(r, 16, "cells")?,
    })
}

/// One document's versions as the executor's runner reads them, oldest first: no provenance
/// and no timestamps. The rows come in `cells_pd` index order (field, version) and are sorted
/// here: SQLite's sorter copies every record for 28 rows, a sort of the finished vector does not.
pub fn versions_for_run(
    c: &Connection,
    pd_seq: i64,
) -> Result<Vec<crate::domain::cells::Cell>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT seq, pd_seq, field_key, version, value, source, phase_index, generation, pass, confidence, source_text,
         config_version, rule_type, note, NULL, NULL, NULL FROM cells WHERE pd_seq = ?1",
    )?;
    let mut cells = st
        .query_map([pd_seq], cell_of)?
        .collect::<Result<Vec<_>, _>>()?;
    cells.sort_unstable_by_key(|c| c.seq);
    Ok(cells)
}

#[derive(Debug, Clone)]
pub struct VerdictRow {
    pub field: String,
    pub phase_index: usize,
    pub stage_id: String,
    pub generation: i64,
    pub pass: i64,
    pub outcome: String,
    pub suppressed: bool,
    pub reason: Option<String>,
    pub mechanisms: Value,
    pub value_hash: String,
}

pub fn verdicts(c: &Connection, pd_seq: i64) -> Result<Vec<VerdictRow>, StoreError> {
    let mut texts = std::collections::HashMap::new();
    let mut stmt = c.prepare_cached(
        "SELECT v.seq, v.field_key, v.phase_index, s.text, v.generation, v.pass, v.outcome, v.suppressed, v.reason,
                v.mechanisms, v.value_hash
         FROM verdicts v LEFT JOIN interned s ON s.id = v.stage WHERE v.pd_seq = ?1 ORDER BY v.seq",
    )?;
    let mut rows = stmt.query([pd_seq])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let column: String = r.get(9)?;
        out.push(VerdictRow {
            field: r.get(1)?,
            phase_index: r.get::<_, i64>(2)? as usize,
            stage_id: r.get::<_, Option<String>>(3)?.ok_or_else(|| {
                super::Corrupt::error("verdicts", "stage", seq, "names no interned text")
            })?,
            generation: r.get(4)?,
            pass: r.get(5)?,
            outcome: r.get(6)?,
            suppressed: r.get::<_, i64>(7)? != 0,
            reason: r.get(8)?,
            mechanisms: super::intern::mechanisms_json(c, seq, &column, &mut texts)?,
            value_hash: r.get(10)?,
        });
    }
    Ok(out)
}

/// Ends every queued or processing document with `error` ("cancelled"); the run becomes `cancelled`.
pub fn cancel(c: &Connection, pipeline_id: &str) -> Result<usize, StoreError> {
    // A document the open rerun has not reset yet is queued to every reader: reset it first.
    super::reruns::materialize_all(c, pipeline_id)?;
    let now = now_rfc3339();
    let n = c.execute(
        "UPDATE pipeline_docs SET status = 'error', error = 'cancelled', error_phase_index = cursor,
         claim_token = NULL, updated_at = ?2, completed_at = ?2
         WHERE pipeline_id = ?1 AND status IN ('queued', 'processing')",
        params![pipeline_id, now],
    )?;
    c.execute(
        "UPDATE pipelines SET status = 'cancelled', updated_at = ?2, completed_at = ?2 WHERE id = ?1",
        params![pipeline_id, now],
    )?;
    ensure_record_set(c, pipeline_id)?;
    Ok(n)
}

pub fn active_count(c: &Connection, pipeline_id: &str) -> Result<i64, StoreError> {
    counted(c, pipeline_id, &["queued", "processing"])
}

/// Creates the record set when the run has a complete or partial document and none yet.
pub fn ensure_record_set(c: &Connection, pipeline_id: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO record_sets(pipeline_id, created_at)
         SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM pipeline_docs pd JOIN pipelines p ON p.id = pd.pipeline_id
            WHERE pd.pipeline_id = ?1 AND pd.status IN ('complete', 'partial') AND pd.generation >= p.lazy_generation)
         ON CONFLICT(pipeline_id) DO NOTHING",
        params![pipeline_id, now_rfc3339()],
    )?;
    Ok(())
}

/// After documents became terminal: when nothing is left to do, the run leaves `active`.
/// Moves a run out of `active` once none of its documents is queued or processing; answers the
/// new status when this call made the move, and the reruns it finished.
pub fn settle(c: &Connection, pipeline_id: &str) -> Result<Settled, StoreError> {
    // Read from the stored rows by index: a pending document (the open rerun has not reset it
    // yet) is queued to every reader.
    let busy: bool = c
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM pipeline_docs WHERE pipeline_id = ?1 AND status IN ('queued', 'processing'))",
        )?
        .query_row([pipeline_id], |r| r.get(0))?
        || super::reruns::has_pending(c, pipeline_id)?;
    if busy {
        return Ok(Settled::default());
    }
    let done = counted(c, pipeline_id, &["complete", "partial"])?;
    let now = now_rfc3339();
    let status = if done > 0 { "completed" } else { "failed" };
    let moved = c
        .prepare_cached(
            "UPDATE pipelines SET status = ?2, updated_at = ?3, completed_at = ?3 WHERE id = ?1 AND status = 'active'",
        )?
        .execute(params![pipeline_id, status, now])?;
    let reruns = super::reruns::finish_open(c, pipeline_id)?;
    ensure_record_set(c, pipeline_id)?;
    Ok(Settled {
        status: (moved > 0).then_some(status),
        reruns,
    })
}

#[derive(Debug, Default)]
pub struct Settled {
    /// `completed` or `failed`, when this call moved the run out of `active`.
    pub status: Option<&'static str>,
    pub reruns: Vec<super::reruns::FinishedRerun>,
}

/// What `/metrics` reads from the database: documents by status across all runs, and the
/// fields waiting for a reviewer.
pub fn metric_gauges(c: &Connection) -> Result<Gauges, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT CASE WHEN s.generation < p.lazy_generation THEN 'queued' ELSE s.status END, CAST(sum(s.count) AS BIGINT)
         FROM pipeline_status_counts s JOIN pipelines p ON p.id = s.pipeline_id
         WHERE s.count > 0 GROUP BY 1 ORDER BY 1",
    )?;
    let documents = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    // Less the stale rows of documents pending a whole-run rerun's reset (migration 16).
    let review_queue = c.query_row(
        "SELECT CAST((SELECT coalesce(sum(count), 0) FROM held_counts)
              - (SELECT count(*) FROM pipelines p CROSS JOIN held_fields h CROSS JOIN pipeline_docs pd
                 WHERE p.lazy_held = 1 AND h.pipeline_id = p.id AND pd.seq = h.pd_seq
                   AND pd.generation < p.lazy_generation) AS BIGINT)",
        [],
        |r| r.get(0),
    )?;
    Ok(Gauges {
        documents,
        review_queue,
        webhook_deliveries: super::webhooks::counts(c)?,
    })
}

/// Held fields of a run that still wait for a person (error documents are not waited on).
/// Counted as the run's held fields less those of its error documents: reading each held
/// field's document instead cost 40 ms per results page at 1,000,000 documents (20,000 held),
/// this 4 ms. A pending document's stale rows are not counted (`held_count`).
pub fn pending_review_count(
    c: &Connection,
    org_id: &str,
    pipeline_id: &str,
) -> Result<i64, StoreError> {
    super::review::held_count(
        c,
        &super::review::QueueFilter {
            org_id,
            pipeline_id: Some(pipeline_id),
            trigger: None,
            status: None,
            hold: false,
            field_key: None,
            stage_id: None,
            ascending: false,
        },
    )
}

/// Documents a run delivers (every one but those that ended in error).
pub fn delivered_count(c: &Connection, pipeline_id: &str) -> Result<i64, StoreError> {
    counted(
        c,
        pipeline_id,
        &["queued", "processing", "complete", "partial"],
    )
}

/// Gauges read from the database at scrape time.
#[derive(Default)]
pub struct Gauges {
    /// Pipeline documents by status.
    pub documents: Vec<(String, i64)>,
    /// Fields waiting for a reviewer.
    pub review_queue: i64,
    /// Webhook deliveries by status.
    pub webhook_deliveries: Vec<(String, i64)>,
}

/// Documents of a run that ended `complete` or `partial`: what a data product can deliver.
pub fn finished_count(c: &Connection, pipeline_id: &str) -> Result<i64, StoreError> {
    counted(c, pipeline_id, &["complete", "partial"])
}

/// Whether a run's rail has a phase made from this gate or policy.
pub fn runs_phase(c: &Connection, pipeline_id: &str, ref_id: &str) -> Result<bool, StoreError> {
    Ok(c.query_row(
        "SELECT EXISTS(SELECT 1 FROM pipeline_phases WHERE pipeline_id = ?1 AND ref_id = ?2)",
        [pipeline_id, ref_id],
        |r| r.get(0),
    )?)
}

/// The organization's runs with a phase made from this gate or policy.
pub fn running_phase(
    c: &Connection,
    org_id: &str,
    ref_id: &str,
) -> Result<Vec<String>, StoreError> {
    Ok(c
        .prepare(
            "SELECT DISTINCT pp.pipeline_id FROM pipeline_phases pp JOIN pipelines p ON p.id = pp.pipeline_id
             WHERE pp.ref_id = ?1 AND p.org_id = ?2",
        )?
        .query_map([ref_id, org_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// A run's document that ended in error, with where and why.
pub struct FailedDocument {
    pub id: String,
    pub org_id: String,
    pub pipeline_id: String,
    pub document_id: String,
    pub filename: String,
    pub error: Option<String>,
    pub error_phase_index: Option<i64>,
}

pub fn failed_document(c: &Connection, pd_seq: i64) -> Result<Option<FailedDocument>, StoreError> {
    use super::conn::OptionalExtension;
    Ok(c
        .prepare_cached(
            "SELECT pd.id, p.org_id, pd.pipeline_id, pd.document_id, d.filename, pd.error, pd.error_phase_index
             FROM pipeline_documents pd JOIN pipelines p ON p.id = pd.pipeline_id
             JOIN documents d ON d.id = pd.document_id
             WHERE pd.seq = ?1 AND pd.status = 'error'",
        )?
        .query_row([pd_seq], |r| {
            Ok(FailedDocument {
                id: r.get(0)?,
                org_id: r.get(1)?,
                pipeline_id: r.get(2)?,
                document_id: r.get(3)?,
                filename: r.get(4)?,
                error: r.get(5)?,
                error_phase_index: r.get(6)?,
            })
        })
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::super::conn::{params, Connection};

    /// The trigger-kept counts against a `GROUP BY` over the documents themselves.
    fn agree(c: &Connection) {
        let q = |sql: &str| -> Vec<(String, i64, String, i64, i64, i64)> {
            c.prepare(sql)
                .unwrap()
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(
            q(
                "SELECT pipeline_id, generation, status, cursor, error_phase, count FROM pipeline_status_counts
               WHERE count > 0 ORDER BY 1, 2, 3, 4, 5"
            ),
            q(
                "SELECT pipeline_id, generation, status, cursor, coalesce(error_phase_index, -1), count(*)
               FROM pipeline_docs GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
            ),
        );
    }

    #[test]
    fn versions_read_oldest_first_per_document_whatever_the_index_order() {
        let (_dir, db) = crate::store::scratch_db();
        let c = db.dedicated().unwrap();
        c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        // The index is (document, field, version): writing fields out of alphabetical order,
        // interleaved across two documents, makes index order differ from write order.
        let writes = [
            (2, "b", 1),
            (1, "z", 1),
            (1, "a", 1),
            (2, "a", 1),
            (1, "z", 2),
            (1, "m", 1),
        ];
        for (pd, field, version) in writes {
            c.execute(
                "INSERT INTO cells(pd_seq, field_key, version, value, source, phase_index, generation, pass, created_at)
                 VALUES (?1, ?2, ?3, '1', 'rules', 1, 1, 1, 't')",
                params![pd, field, version],
            )
            .unwrap();
        }
        let seq_of = |pd: i64, field: &str, version: i64| -> i64 {
            c.query_row(
                "SELECT seq FROM cells WHERE pd_seq = ?1 AND field_key = ?2 AND version = ?3",
                params![pd, field, version],
                |r| r.get(0),
            )
            .unwrap()
        };
        let mut want: Vec<(i64, i64)> = writes
            .iter()
            .map(|&(pd, f, v)| (pd, seq_of(pd, f, v)))
            .collect();
        want.sort();
        let got: Vec<(i64, i64)> = super::cells_with(&c, &[2, 1], false)
            .unwrap()
            .iter()
            .map(|r| (r.pd_seq, r.seq))
            .collect();
        assert_eq!(got, want);
        let one: Vec<i64> = super::versions_for_run(&c, 1)
            .unwrap()
            .iter()
            .map(|v| v.seq)
            .collect();
        let want_one: Vec<i64> = want.iter().filter(|w| w.0 == 1).map(|w| w.1).collect();
        assert_eq!(one, want_one);
        assert_eq!(
            super::versions_for_run(&c, 1).unwrap()[0].field,
            "z",
            "the first version written is the first read"
        );
    }

    #[test]
    fn the_status_counts_follow_every_insert_update_and_delete_of_a_document() {
        let (_dir, db) = crate::store::scratch_db();
        let c = db.dedicated().unwrap();
        c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        let mut next = 0;
        let mut insert = |pipeline: &str, status: &str, cursor: i64| {
            next += 1;
            c.execute(
                "INSERT INTO pipeline_docs(id, pipeline_id, document_id, ordinal, status, cursor, created_at, updated_at)
                 VALUES (?1, ?2, 'd', ?3, ?4, ?5, 't', 't')",
                params![format!("pd{next}"), pipeline, next, status, cursor],
            )
            .unwrap();
        };
        for i in 0..40 {
            insert(if i % 3 == 0 { "a" } else { "b" }, "queued", 0);
        }
        agree(&c);
        let steps = [
            // A claim round, a commit, an error at a phase, a requeue, a rerun's bulk reset, a
            // change that touches none of the counted columns, and deletes.
            "UPDATE pipeline_docs SET status = 'processing' WHERE seq <= 10",
            "UPDATE pipeline_docs SET status = 'complete', cursor = 5 WHERE seq <= 6",
            "UPDATE pipeline_docs SET status = 'error', error_phase_index = 2, cursor = 2 WHERE seq IN (7, 8)",
            "UPDATE pipeline_docs SET status = 'queued' WHERE seq IN (9, 10)",
            "UPDATE pipeline_docs SET status = 'partial', cursor = 5 WHERE seq BETWEEN 11 AND 20",
            "UPDATE pipeline_docs SET status = 'queued', cursor = 3, error_phase_index = NULL WHERE pipeline_id = 'a'",
            "UPDATE pipeline_docs SET updated_at = 'u', attempts = attempts + 1",
            "UPDATE pipeline_docs SET generation = 2 WHERE seq BETWEEN 15 AND 30",
            "UPDATE pipeline_docs SET generation = 3, status = 'queued' WHERE seq BETWEEN 25 AND 35",
            "DELETE FROM pipeline_docs WHERE seq % 7 = 0",
        ];
        for sql in steps {
            c.execute(sql, []).unwrap();
            agree(&c);
        }
    }
}
