//! The rail compiler: ordered stages become the compiled phases of a pipeline.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashSet;

pub const MAX_STAGES: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stage {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseType {
    Transfer,
    Extraction,
    Resolution,
    Validation,
}

impl PhaseType {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseType::Transfer => "transfer",
            PhaseType::Extraction => "extraction",
            PhaseType::Resolution => "resolution",
            PhaseType::Validation => "validation",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "transfer" => PhaseType::Transfer,
            "extraction" => PhaseType::Extraction,
            "resolution" => PhaseType::Resolution,
            "validation" => PhaseType::Validation,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Phase {
    pub index: usize,
    pub phase_id: String,
    #[serde(rename = "type")]
    pub kind: PhaseType,
    pub name: String,
    /// The policy or gate this phase runs.
    #[serde(skip)]
    pub ref_id: Option<String>,
}

impl Phase {
    pub fn preview(&self) -> Value {
        json!({ "index": self.index, "phase_id": self.phase_id, "type": self.kind.as_str(), "name": self.name })
    }
}

/// What the compiler needs to know of a policy named by the rail.
pub struct PolicyInfo {
    pub name: String,
    pub active: bool,
    /// The policy's fields and every rule input.
    pub fields: Vec<String>,
}

pub struct GateInfo {
    pub id: String,
    pub name: String,
}

/// Parses the stages of `PUT …/rail`.
pub fn parse_stages(v: &Value) -> Result<Vec<Stage>, String> {
    let list = v.as_array().ok_or("rail must be an array of stages")?;
    if list.len() > MAX_STAGES {
        return Err(format!("a rail has at most {MAX_STAGES} stages"));
    }
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let o = s
            .as_object()
            .ok_or_else(|| format!("stage {i} must be an object"))?;
        let kind = o
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("stage {i}: type is required"))?;
        let name = match o.get("name") {
            None | Some(Value::Null) => default_name(kind).to_string(),
            Some(Value::String(n)) if !n.trim().is_empty() && n.chars().count() <= 100 => {
                n.trim().to_string()
            }
            Some(_) => {
                return Err(format!(
                    "stage {i}: name must be a string of 1-100 characters"
                ))
            }
        };
        let json = match o.get("json") {
            None | Some(Value::Null) => None,
            Some(j @ Value::Object(_)) => Some(j.clone()),
            Some(_) => return Err(format!("stage {i} ('{name}'): json must be an object")),
        };
        out.push(Stage {
            kind: kind.to_string(),
            name,
            json,
        });
    }
    Ok(out)
}

fn default_name(kind: &str) -> &'static str {
    match kind {
        "source" => "Source",
        "deliver" => "Deliver",
        "registry" => "Field Registry",
        "schema" => "Extraction",
        "resolve" => "Resolution",
        "valid" => "Validation",
        _ => "Stage",
    }
}

fn id_list(json: Option<&Value>, key: &str, at: &str) -> Result<Option<Vec<String>>, String> {
    let Some(v) = json.and_then(|j| j.get(key)) else {
        return Ok(None);
    };
    if v.is_null() {
        return Ok(None);
    }
    let arr = v
        .as_array()
        .ok_or_else(|| format!("{at}: json.{key} must be an array of ids"))?;
    arr.iter()
        .map(|x| {
            x.as_str()
                .and_then(crate::domain::ids::parse_id)
                .ok_or_else(|| format!("{at}: json.{key} must hold UUIDs"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The model a schema stage extracts with (`{"extractor": "model", "model": NAME}`), or none
/// for the built-in `rules`.
fn extractor_model(
    json: Option<&Value>,
    models: &[String],
    at: &str,
) -> Result<Option<String>, String> {
    let configured = || {
        if models.is_empty() {
            "none; start quire serve with --model NAME=URL".to_string()
        } else {
            models.join(", ")
        }
    };
    match json.and_then(|j| j.get("extractor")) {
        None => Ok(None),
        Some(e) if e == "rules" => Ok(None),
        Some(e) if e == "model" => {
            let name = json
                .and_then(|j| j.get("model"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    format!(
                        "{at}: json.model is required with the model extractor (configured: {})",
                        configured()
                    )
                })?;
            if !models.iter().any(|m| m == name) {
                return Err(format!(
                    "{at}: model '{name}' is not configured on this server (configured: {})",
                    configured()
                ));
            }
            Ok(Some(name.to_string()))
        }
        Some(_) => Err(format!(
            "{at}: json.extractor must be \"rules\" (the built-in extractor) or \"model\""
        )),
    }
}

/// Compiles stages into phases. `policy(id)` and `gates` describe what the organization and
/// schema have, `models` the model extractors this server is configured with; every violation
/// is an error naming the stage. An extraction phase's `ref_id` is its model, if any.
pub fn compile(
    stages: &[Stage],
    schema_fields: &[String],
    policy: &dyn Fn(&str) -> Option<PolicyInfo>,
    gates: &[GateInfo],
    models: &[String],
) -> Result<Vec<Phase>, String> {
    let mut phases: Vec<Phase> = Vec::new();
    let mut seen_schema = false;
    let mut seen_registry = false;
    let mut used_policies = HashSet::new();
    let mut used_gates = HashSet::new();
    let push = |phases: &mut Vec<Phase>, kind: PhaseType, name: String, ref_id: Option<String>| {
        let n = phases.iter().filter(|p| p.kind == kind).count();
        let phase_id = if n == 0 {
            kind.as_str().to_string()
        } else {
            format!("{}_{}", kind.as_str(), n + 1)
        };
        phases.push(Phase {
            index: phases.len(),
            phase_id,
            kind,
            name,
            ref_id,
        });
    };
    for (i, s) in stages.iter().enumerate() {
        let at = format!("stage {i} ({} '{}')", s.kind, s.name);
        match s.kind.as_str() {
            "source" | "deliver" => {}
            "registry" => {
                if seen_registry {
                    return Err(format!("{at}: a rail has at most one registry stage"));
                }
                if seen_schema {
                    return Err(format!("{at}: the registry stage must come before the schema stage"));
                }
                seen_registry = true;
                push(&mut phases, PhaseType::Transfer, s.name.clone(), None);
            }
            "schema" => {
                if seen_schema {
                    return Err(format!("{at}: a rail has exactly one schema stage"));
                }
                let model = extractor_model(s.json.as_ref(), models, &at)?;
                seen_schema = true;
                push(&mut phases, PhaseType::Extraction, s.name.clone(), model);
            }
            "resolve" => {
                if !seen_schema {
                    return Err(format!("{at}: resolve stages must come after the schema stage"));
                }
                let ids = id_list(s.json.as_ref(), "policy_ids", &at)?
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| format!("{at}: json.policy_ids is required and must not be empty"))?;
                for id in ids {
                    let p = policy(&id).ok_or_else(|| format!("{at}: policy {id} not found"))?;
                    if !p.active {
                        return Err(format!("{at}: policy '{}' is not active (it needs at least one field and one rule)", p.name));
                    }
                    if let Some(f) = p.fields.iter().find(|f| !schema_fields.contains(f)) {
                        return Err(format!("{at}: policy '{}' uses field '{f}', which is not a field of this schema", p.name));
                    }
                    if !used_policies.insert(id.clone()) {
                        return Err(format!("{at}: policy '{}' appears twice in the rail", p.name));
                    }
                    push(&mut phases, PhaseType::Resolution, p.name, Some(id));
                }
            }
            "valid" => {
                if !seen_schema {
                    return Err(format!("{at}: valid stages must come after the schema stage"));
                }
                let chosen: Vec<&GateInfo> = match id_list(s.json.as_ref(), "stage_ids", &at)? {
                    None => gates.iter().collect(),
                    Some(ids) => ids
                        .iter()
                        .map(|id| {
                            gates
                                .iter()
                                .find(|g| &g.id == id)
                                .ok_or_else(|| format!("{at}: {id} is not a validation stage of this schema"))
                        })
                        .collect::<Result<_, _>>()?,
                };
                for g in chosen {
                    if !used_gates.insert(g.id.clone()) {
                        return Err(format!("{at}: gate '{}' appears twice in the rail", g.name));
                    }
                    push(&mut phases, PhaseType::Validation, g.name.clone(), Some(g.id.clone()));
                }
            }
            other => return Err(format!("{at}: unknown stage type '{other}' (use source, registry, schema, resolve, valid, deliver)")),
        }
    }
    if !stages.is_empty() && !seen_schema {
        return Err("the rail needs exactly one schema stage".into());
    }
    Ok(phases)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P1: &str = "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d01";
    const P2: &str = "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d02";
    const INACTIVE: &str = "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d03";
    const FOREIGN_FIELD: &str = "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d04";
    const G1: &str = "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d11";
    const G2: &str = "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d12";

    fn policy(id: &str) -> Option<PolicyInfo> {
        let info = |name: &str, active: bool, fields: &[&str]| PolicyInfo {
            name: name.into(),
            active,
            fields: fields.iter().map(|s| s.to_string()).collect(),
        };
        match id {
            P1 => Some(info("Normalize", true, &["total"])),
            P2 => Some(info("Compute", true, &["total", "net"])),
            INACTIVE => Some(info("Empty", false, &[])),
            FOREIGN_FIELD => Some(info("Other", true, &["ghost"])),
            _ => None,
        }
    }

    fn gates() -> Vec<GateInfo> {
        vec![
            GateInfo {
                id: G1.into(),
                name: "Totals".into(),
            },
            GateInfo {
                id: G2.into(),
                name: "Format".into(),
            },
        ]
    }

    fn run(rail: Value) -> Result<Vec<Phase>, String> {
        let fields = vec!["total".to_string(), "net".to_string()];
        compile(
            &parse_stages(&rail)?,
            &fields,
            &policy,
            &gates(),
            &["local-qwen".to_string()],
        )
    }

    #[test]
    fn a_schema_stage_extracts_with_a_configured_model_or_names_those_there_are() {
        let phases =
            run(json!([{"type": "schema", "json": {"extractor": "model", "model": "local-qwen"}}]))
                .unwrap();
        assert_eq!(phases[0].ref_id.as_deref(), Some("local-qwen"));
        let err =
            run(json!([{"type": "schema", "json": {"extractor": "model", "model": "gpt-9"}}]))
                .unwrap_err();
        assert!(
            err.contains("model 'gpt-9' is not configured") && err.contains("local-qwen"),
            "{err}"
        );
        let err = run(json!([{"type": "schema", "json": {"extractor": "model"}}])).unwrap_err();
        assert!(err.contains("json.model is required"), "{err}");
        assert_eq!(run(json!([{"type": "schema"}])).unwrap()[0].ref_id, None);
    }

    #[test]
    fn compiles_with_repeated_types_numbered() {
        let phases = run(json!([
            {"type": "source", "name": "In"},
            {"type": "registry", "name": "Field Registry"},
            {"type": "schema", "name": "Extraction", "json": {"extractor": "rules"}},
            {"type": "valid", "name": "First", "json": {"stage_ids": [G2]}},
            {"type": "resolve", "name": "R", "json": {"policy_ids": [P1, P2]}},
            {"type": "valid", "name": "Rest", "json": {"stage_ids": [G1]}},
            {"type": "deliver", "name": "Out"}]))
        .unwrap();
        let ids: Vec<_> = phases.iter().map(|p| p.phase_id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                "transfer",
                "extraction",
                "validation",
                "resolution",
                "resolution_2",
                "validation_2"
            ]
        );
        assert_eq!(phases[3].name, "Normalize");
        assert_eq!(phases[2].name, "Format");
        assert_eq!(phases[5].index, 5);
        let all = run(json!([{"type": "schema"}, {"type": "valid"}])).unwrap();
        assert_eq!(
            all.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            vec!["Extraction", "Totals", "Format"]
        );
        assert!(run(json!([])).unwrap().is_empty());
    }

    #[test]
    fn every_rule_violation_names_the_stage() {
        let cases = [
            (
                json!([{"type": "schema", "name": "S"}, {"type": "magic", "name": "M"}]),
                "stage 1 (magic 'M')",
            ),
            (
                json!([{"type": "registry"}, {"type": "registry"}, {"type": "schema"}]),
                "at most one registry",
            ),
            (
                json!([{"type": "schema"}, {"type": "registry"}]),
                "before the schema",
            ),
            (json!([{"type": "registry"}]), "exactly one schema"),
            (
                json!([{"type": "schema"}, {"type": "schema"}]),
                "exactly one schema",
            ),
            (
                json!([{"type": "resolve", "json": {"policy_ids": [P1]}}, {"type": "schema"}]),
                "after the schema",
            ),
            (
                json!([{"type": "valid"}, {"type": "schema"}]),
                "after the schema",
            ),
            (
                json!([{"type": "schema"}, {"type": "resolve"}]),
                "policy_ids is required",
            ),
            (
                json!([{"type": "schema"}, {"type": "resolve", "json": {"policy_ids": []}}]),
                "policy_ids is required",
            ),
            (
                json!([{"type": "schema"}, {"type": "resolve", "json": {"policy_ids": ["x"]}}]),
                "UUIDs",
            ),
            (
                json!([{"type": "schema"}, {"type": "resolve", "json": {"policy_ids": [INACTIVE]}}]),
                "not active",
            ),
            (
                json!([{"type": "schema"}, {"type": "resolve", "json": {"policy_ids": [FOREIGN_FIELD]}}]),
                "ghost",
            ),
            (
                json!([{"type": "schema"}, {"type": "resolve", "json": {"policy_ids": ["0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d99"]}}]),
                "not found",
            ),
            (
                json!([{"type": "schema"}, {"type": "resolve", "json": {"policy_ids": [P1]}}, {"type": "resolve", "json": {"policy_ids": [P1]}}]),
                "twice",
            ),
            (
                json!([{"type": "schema"}, {"type": "valid", "json": {"stage_ids": [G1, G1]}}]),
                "twice",
            ),
            (
                json!([{"type": "schema"}, {"type": "valid", "json": {"stage_ids": [P1]}}]),
                "not a validation stage",
            ),
            (
                json!([{"type": "schema", "json": {"extractor": "gpt"}}]),
                "extractor",
            ),
        ];
        for (rail, expected) in cases {
            let err = run(rail.clone()).unwrap_err();
            assert!(err.contains(expected), "{rail}: {err}");
        }
        let too_many: Vec<Value> = (0..51).map(|_| json!({"type": "source"})).collect();
        assert!(run(Value::Array(too_many))
            .unwrap_err()
            .contains("at most 50"));
    }
}
