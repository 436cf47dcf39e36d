//! Organization and key administration shared by the CLI and start-up bootstrap.

use crate::domain::ids::format_time;
use crate::domain::keys::{generate_key, hash_key, is_well_formed, Scope, DEFAULT_SCOPES};
use crate::store::{self, keys, orgs, Db, StoreError};

pub const DEFAULT_ORG: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct CreatedKey {
    pub id: String,
    pub plain: String,
    pub org_name: String,
}

pub struct KeySpec<'a> {
    pub org: &'a str,
    pub name: &'a str,
    pub scopes: &'a [Scope],
    pub expires_in_secs: Option<i64>,
    pub rate_limit: Option<u32>,
}

pub fn create_org(db: &Db, name: &str) -> Result<orgs::Org, AdminError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AdminError::Invalid(
            "organization names are 1-100 characters".into(),
        ));
    }
    db.write(true, |tx| {
        orgs::create(tx, name)?
            .ok_or_else(|| AdminError::Invalid(format!("organization '{name}' already exists")))
    })
}

pub fn create_key(db: &Db, spec: KeySpec) -> Result<CreatedKey, AdminError> {
    let plain = generate_key("live");
    db.write(true, |tx| {
        let org = orgs::find_by_name_or_id(tx, spec.org)?.ok_or_else(|| {
            AdminError::Invalid(format!("organization '{}' does not exist", spec.org))
        })?;
        let expires_at = match spec.expires_in_secs {
            None => None,
            Some(s) => Some(format_time(
                chrono::TimeDelta::try_seconds(s)
                    .and_then(|d| chrono::Utc::now().checked_add_signed(d))
                    .ok_or_else(|| {
                        AdminError::Invalid(format!("an expiry {s} seconds ahead is out of range"))
                    })?,
            )),
        };
        let id = keys::insert(
            tx,
            keys::NewKey {
                org_id: &org.id,
                name: spec.name,
                plain: &plain,
                scopes: spec.scopes,
                rate_limit: spec.rate_limit,
                expires_at,
                bootstrap: false,
            },
        )?;
        Ok(CreatedKey {
            id,
            plain: plain.clone(),
            org_name: org.name,
        })
    })
}

/// Start-up: with `bootstrap` set, makes sure that exact key exists (read+write, organization
/// `default`); otherwise, on an empty database, creates `default` and a first key to print.
pub fn ensure_bootstrap(db: &Db, bootstrap: Option<&str>) -> Result<Option<String>, AdminError> {
    if db.read_only() {
        // Nothing can be created; a bootstrap key must already be there to be of use.
        return db.read(|c| match bootstrap {
            Some(plain) => match keys::find_by_hash(c, &hash_key(plain))? {
                Some(k) if k.revoked_at.is_none() => Ok(None),
                _ => Err(AdminError::Invalid(
                    "the database is read-only and does not hold QUIRE_BOOTSTRAP_KEY".into(),
                )),
            },
            None => Ok(None),
        });
    }
    db.write(true, |tx| {
        if let Some(plain) = bootstrap {
            if !is_well_formed(plain) {
                return Err(AdminError::Invalid(
                    "QUIRE_BOOTSTRAP_KEY must look like tlnc_<env>_<32+ letters and digits>".into(),
                ));
            }
            if let Some(existing) = keys::find_by_hash(tx, &hash_key(plain))? {
                if existing.revoked_at.is_some() {
                    return Err(AdminError::Invalid(
                        "QUIRE_BOOTSTRAP_KEY names a key that was revoked; refusing to resurrect it (unset it or choose another key)".into(),
                    ));
                }
                return Ok(None);
            }
            let org = match orgs::find_by_name(tx, DEFAULT_ORG)? {
                Some(o) => o,
                None => orgs::create(tx, DEFAULT_ORG)?.ok_or_else(|| AdminError::Invalid("cannot create default".into()))?,
            };
            keys::insert(
                tx,
                keys::NewKey {
                    org_id: &org.id,
                    name: "bootstrap",
                    plain,
                    scopes: DEFAULT_SCOPES,
                    rate_limit: None,
                    expires_at: None,
                    bootstrap: true,
                },
            )?;
            return Ok(None);
        }
        if orgs::count(tx)? > 0 || keys::count(tx)? > 0 {
            return Ok(None);
        }
        let org = orgs::create(tx, DEFAULT_ORG)?.ok_or_else(|| AdminError::Invalid("cannot create default".into()))?;
        let plain = generate_key("live");
        keys::insert(
            tx,
            keys::NewKey {
                org_id: &org.id,
                name: "first key",
                plain: &plain,
                scopes: DEFAULT_SCOPES,
                rate_limit: None,
                expires_at: None,
                bootstrap: false,
            },
        )?;
        Ok(Some(plain))
    })
}

/// Opens an existing database for the operator commands. Only `serve` (and `demo`, `bench` on
/// files of their own) creates one: a mistyped `--db` must not quietly make an empty database.
pub fn open(path: &str) -> Result<Db, StoreError> {
    if store::is_postgres_url(path) {
        if !store::pg_has_quire(path)? {
            return Err(StoreError::Refused(format!(
                "no Quire database at {}: its schema has no schema_migrations; pass the URL `quire serve` uses with --db (or QUIRE_DB)",
                store::shown_db(path)
            )));
        }
        return Db::open(path, store::OpenOptions::default());
    }
    if path != ":memory:" && !std::path::Path::new(path).exists() {
        let shown = std::path::absolute(path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.to_string());
        return Err(StoreError::Refused(format!(
            "no database at {shown}; pass the file `quire serve` uses with --db (or QUIRE_DB)"
        )));
    }
    Db::open(path, store::OpenOptions::default())
}
