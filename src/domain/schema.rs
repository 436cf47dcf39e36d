//! Schema normalization: the three input forms of `POST /v1/schemas` become one field list and
//! one JSON Schema.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};

pub const DATA_TYPES: [&str; 8] = [
    "string", "number", "integer", "boolean", "date", "currency", "array", "object",
];
pub const MAX_FIELDS: usize = 500;

/// A field of a Spec as stored and answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct FieldDef {
    pub field_name: String,
    pub display_name: String,
    pub data_type: String,
    pub description: Option<String>,
    pub is_required: bool,
    pub requires_review: bool,
    pub synonyms: Vec<String>,
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "enum")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub enum_values: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// A JSON Schema property's `title`, kept as given (it also names the field for display
    /// when no `x-display-name` does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// An `array` field's elements: each an object of these typed sub-fields (a table's
    /// columns). Absent for every other type, and for an array of bare values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub items: Option<Vec<FieldDef>>,
}

pub fn valid_field_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// `invoice_number` → `Invoice Number`.
pub fn default_display_name(name: &str) -> String {
    name.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn opt_string(v: Option<&Value>, what: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{what} must be a string")),
    }
}

fn opt_bool(v: Option<&Value>, what: &str) -> Result<bool, String> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("{what} must be a boolean")),
    }
}

fn string_list(v: Option<&Value>, what: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{what} must be an array of strings"))
            })
            .collect(),
        Some(_) => Err(format!("{what} must be an array of strings")),
    }
}

fn check_type(t: &str, what: &str) -> Result<String, String> {
    if DATA_TYPES.contains(&t) {
        Ok(t.to_string())
    } else {
        Err(format!("{what} must be one of {}", DATA_TYPES.join(", ")))
    }
}

/// Parses the `fields` input: a list of field objects or a flat `{ name: type }` map.
pub fn fields_from_input(v: &Value) -> Result<Vec<FieldDef>, String> {
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| field_from_object(item, &format!("fields[{i}]")))
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(name, t)| {
                let at = format!("fields.{name}");
                // `"lines": [{"description": "string", "amount": "number"}]`: a table whose
                // elements have these columns.
                let (data_type, items) = match t {
                    Value::String(t) => (check_type(t, &at)?, None),
                    Value::Array(one) if one.len() == 1 && one[0].is_object() => (
                        "array".to_string(),
                        Some(items_from(&one[0], &format!("{at}[0]"))?),
                    ),
                    _ => {
                        return Err(format!(
                            "{at} must be a data type string, or a list holding one object of \
                             sub-field names and types (an array of those objects)"
                        ))
                    }
                };
                Ok(FieldDef {
                    field_name: name.clone(),
                    display_name: default_display_name(name),
                    data_type,
                    description: None,
                    is_required: false,
                    requires_review: false,
                    synonyms: Vec::new(),
                    depends_on: Vec::new(),
                    enum_values: None,
                    format: None,
                    title: None,
                    items,
                })
            })
            .collect(),
        _ => Err("fields must be an array of field objects or an object of name: type".into()),
    }
}

fn field_from_object(item: &Value, at: &str) -> Result<FieldDef, String> {
    let obj = item
        .as_object()
        .ok_or_else(|| format!("{at} must be an object"))?;
    let name = opt_string(obj.get("field_name"), &format!("{at}.field_name"))?
        .ok_or_else(|| format!("{at}.field_name is required"))?;
    let data_type = match opt_string(obj.get("data_type"), &format!("{at}.data_type"))? {
        Some(t) => check_type(&t, &format!("{at}.data_type"))?,
        None => "string".to_string(),
    };
    let enum_values = match obj.get("enum") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(a.clone()),
        Some(_) => return Err(format!("{at}.enum must be an array")),
    };
    let items = match obj.get("items") {
        None | Some(Value::Null) => None,
        Some(v) => Some(items_from(v, &format!("{at}.items"))?),
    };
    Ok(FieldDef {
        items,
        display_name: opt_string(obj.get("display_name"), &format!("{at}.display_name"))?
            .unwrap_or_else(|| default_display_name(&name)),
        data_type,
        description: opt_string(obj.get("description"), &format!("{at}.description"))?,
        is_required: opt_bool(obj.get("is_required"), &format!("{at}.is_required"))?,
        requires_review: opt_bool(obj.get("requires_review"), &format!("{at}.requires_review"))?,
        synonyms: string_list(obj.get("synonyms"), &format!("{at}.synonyms"))?,
        depends_on: string_list(obj.get("depends_on"), &format!("{at}.depends_on"))?,
        enum_values,
        format: opt_string(obj.get("format"), &format!("{at}.format"))?,
        title: opt_string(obj.get("title"), &format!("{at}.title"))?,
        field_name: name,
    })
}

/// An array field's sub-fields, in the list or the map form (`items` of a field object, or the
/// object a map-form field's one-element list holds).
fn items_from(v: &Value, at: &str) -> Result<Vec<FieldDef>, String> {
    match v {
        Value::Array(_) | Value::Object(_) => {
            fields_from_input(v).map_err(|e| format!("{at}: {e}"))
        }
        _ => Err(format!(
            "{at} must be a list of sub-field objects or an object of name: type"
        )),
    }
}

/// A schema given in any of the three forms Quire accepts: a JSON Schema object (it has
/// `properties`, or `type: object`), a list of field objects, or a map of names to types.
pub fn fields_from_any(v: &Value) -> Result<Vec<FieldDef>, String> {
    let is_definition = v
        .as_object()
        .is_some_and(|o| o.contains_key("properties") || o.get("type") == Some(&json!("object")));
    if is_definition {
        fields_from_definition(v)
    } else {
        fields_from_input(v)
    }
}

/// Parses a JSON Schema `definition` with the `x-` extensions.
pub fn fields_from_definition(def: &Value) -> Result<Vec<FieldDef>, String> {
    definition_fields(def, "definition")
}

/// The fields of a JSON Schema object (`def`, which the messages call `whose`).
fn definition_fields(def: &Value, whose: &str) -> Result<Vec<FieldDef>, String> {
    let obj = def
        .as_object()
        .ok_or_else(|| format!("{whose} must be a JSON Schema object"))?;
    if let Some(t) = obj.get("type") {
        if t != "object" {
            return Err(format!("{whose}.type must be \"object\""));
        }
    }
    let required = string_list(obj.get("required"), &format!("{whose}.required"))?;
    let props = match obj.get("properties") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(format!("{whose}.properties must be an object")),
    };
    let mut out = Vec::with_capacity(props.len());
    for (name, prop) in props {
        let at = format!("{whose}.properties.{name}");
        let p = prop
            .as_object()
            .ok_or_else(|| format!("{at} must be an object"))?;
        let format = opt_string(p.get("format"), &format!("{at}.format"))?;
        let json_type =
            opt_string(p.get("type"), &format!("{at}.type"))?.unwrap_or_else(|| "string".into());
        // `date` and `currency` are strings of a format in JSON Schema.
        let data_type = if json_type == "string"
            && matches!(format.as_deref(), Some("date") | Some("currency"))
        {
            format.clone().unwrap_or_default()
        } else {
            check_type(&json_type, &format!("{at}.type"))?
        };
        let title = opt_string(p.get("title"), &format!("{at}.title"))?;
        let enum_values = match p.get("enum") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => return Err(format!("{at}.enum must be an array")),
        };
        // `items: {type: object, properties: …}`: the elements' sub-fields; items of a bare
        // type (`items: {type: string}`) describe a plain list, which has no sub-fields.
        let items = match p.get("items") {
            Some(items) if data_type == "array" && items.get("properties").is_some() => {
                Some(definition_fields(items, &format!("{at}.items"))?)
            }
            _ => None,
        };
        out.push(FieldDef {
            items,
            field_name: name.clone(),
            display_name: opt_string(p.get("x-display-name"), &format!("{at}.x-display-name"))?
                .or_else(|| title.clone())
                .unwrap_or_else(|| default_display_name(name)),
            title,
            description: opt_string(p.get("description"), &format!("{at}.description"))?,
            is_required: required.contains(name),
            requires_review: opt_bool(
                p.get("x-requires-review"),
                &format!("{at}.x-requires-review"),
            )?,
            synonyms: string_list(p.get("x-synonyms"), &format!("{at}.x-synonyms"))?,
            depends_on: string_list(p.get("x-depends-on"), &format!("{at}.x-depends-on"))?,
            enum_values,
            format: if data_type == "date" || data_type == "currency" {
                None
            } else {
                format
            },
            data_type,
        });
    }
    Ok(out)
}

/// Checks names, uniqueness, dependencies and cycles; returns the fields unchanged when valid.
pub fn validate_fields(fields: Vec<FieldDef>) -> Result<Vec<FieldDef>, String> {
    if fields.is_empty() {
        return Err("Schema definition produced no fields".into());
    }
    if fields.len() > MAX_FIELDS {
        return Err(format!("a schema has at most {MAX_FIELDS} fields"));
    }
    check_names(&fields, "field")?;
    for f in &fields {
        check_items(f)?;
    }
    let seen: HashSet<&str> = fields.iter().map(|f| f.field_name.as_str()).collect();
    for f in &fields {
        for d in &f.depends_on {
            if !seen.contains(d.as_str()) {
                return Err(format!(
                    "field '{}' depends on unknown field '{d}'",
                    f.field_name
                ));
            }
            if d == &f.field_name {
                return Err(format!("field '{}' depends on itself", f.field_name));
            }
        }
    }
    if let Some(cycle_at) = find_cycle(&fields) {
        return Err(format!(
            "depends_on forms a cycle through field '{cycle_at}'"
        ));
    }
    Ok(fields)
}

/// Most sub-fields an array field's elements have.
pub const MAX_ITEMS: usize = 100;

/// Names valid and unique, display names of a sane length (`what` names them in messages).
fn check_names(fields: &[FieldDef], what: &str) -> Result<(), String> {
    let mut seen = HashSet::new();
    for f in fields {
        if !valid_field_name(&f.field_name) {
            return Err(format!(
                "{what} name '{}' must match ^[a-z][a-z0-9_]{{0,63}}$",
                f.field_name
            ));
        }
        if !seen.insert(f.field_name.as_str()) {
            return Err(format!("{what} '{}' appears twice", f.field_name));
        }
        if f.display_name.trim().is_empty() || f.display_name.chars().count() > 200 {
            return Err(format!(
                "{what} '{}': display_name must be 1-200 characters",
                f.field_name
            ));
        }
    }
    Ok(())
}

/// An array field's sub-fields are typed scalars, without dependencies of their own; only an
/// array field has them.
fn check_items(f: &FieldDef) -> Result<(), String> {
    let Some(items) = &f.items else {
        return Ok(());
    };
    let name = &f.field_name;
    if f.data_type != "array" {
        return Err(format!(
            "field '{name}' has items but is of type {}: only an array field has items",
            f.data_type
        ));
    }
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(format!(
            "field '{name}': items must name 1-{MAX_ITEMS} sub-fields"
        ));
    }
    check_names(items, &format!("field '{name}': sub-field"))?;
    for s in items {
        if s.field_name == "quote" {
            return Err(format!(
                "field '{name}': sub-field name 'quote' is reserved (a model answers each row's quote under it)"
            ));
        }
        if matches!(s.data_type.as_str(), "array" | "object") {
            return Err(format!(
                "field '{name}': sub-field '{}' must be of a scalar type, not {}",
                s.field_name, s.data_type
            ));
        }
        if !s.depends_on.is_empty() {
            return Err(format!(
                "field '{name}': sub-field '{}' cannot have depends_on (the array field can)",
                s.field_name
            ));
        }
    }
    Ok(())
}

fn find_cycle(fields: &[FieldDef]) -> Option<String> {
    let deps: HashMap<&str, &Vec<String>> = fields
        .iter()
        .map(|f| (f.field_name.as_str(), &f.depends_on))
        .collect();
    // 0 = unvisited, 1 = on stack, 2 = done
    let mut mark: HashMap<&str, u8> = HashMap::new();
    for f in fields {
        let mut stack: Vec<(&str, usize)> = vec![(f.field_name.as_str(), 0)];
        if mark.get(f.field_name.as_str()).copied().unwrap_or(0) == 2 {
            continue;
        }
        mark.insert(f.field_name.as_str(), 1);
        while let Some((node, i)) = stack.pop() {
            let list = deps.get(node).map(|v| v.as_slice()).unwrap_or(&[]);
            if i < list.len() {
                stack.push((node, i + 1));
                let next = list[i].as_str();
                match mark.get(next).copied().unwrap_or(0) {
                    1 => return Some(next.to_string()),
                    0 => {
                        mark.insert(next, 1);
                        stack.push((next, 0));
                    }
                    _ => {}
                }
            } else {
                mark.insert(node, 2);
            }
        }
    }
    None
}

/// Merges `patch` into `base` by field name: replaced fields keep their position, new ones go last.
pub fn merge_fields(base: &[FieldDef], patch: Vec<FieldDef>) -> Vec<FieldDef> {
    let mut out = base.to_vec();
    for f in patch {
        match out.iter_mut().find(|b| b.field_name == f.field_name) {
            Some(slot) => *slot = f,
            None => out.push(f),
        }
    }
    out
}

/// Checks a name a rule, expression or gate uses against the schema: a field, or a path into an
/// array field's elements whose sub-field the field's `items` has (`lines[].amount`).
pub fn check_path(fields: &[FieldDef], name: &str) -> Result<(), String> {
    let p = super::path::parse(name)?;
    let f = fields
        .iter()
        .find(|f| f.field_name == p.field)
        .ok_or_else(|| format!("'{}' is not a field of the schema", p.field))?;
    if p.index.is_none() {
        return Ok(());
    }
    if f.data_type != "array" {
        return Err(format!("'{name}': '{}' is not an array field", p.field));
    }
    match (&p.sub, &f.items) {
        (None, _) => Ok(()),
        (Some(k), Some(items)) if items.iter().any(|s| &s.field_name == k) => Ok(()),
        (Some(k), _) => Err(format!(
            "'{name}': '{k}' is not a sub-field of '{}'",
            p.field
        )),
    }
}

/// Whether a value is of a data type, strictly: a date as `YYYY-MM-DD`, a currency as an ISO
/// 4217 code.
pub fn fits(data_type: &str, v: &Value) -> bool {
    match data_type {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "date" => v.as_str().is_some_and(|s| {
            s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
        }),
        "currency" => v
            .as_str()
            .is_some_and(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

/// What a value of a data type must be, for messages.
pub fn wanted(data_type: &str) -> String {
    match data_type {
        "date" => "a date as YYYY-MM-DD".into(),
        "currency" => "an ISO 4217 currency code such as EUR".into(),
        t => format!("JSON of type {t}"),
    }
}

/// Checks an array's elements against its sub-fields: each an object of sub-fields only, each
/// value null or of its sub-field's type. The message names the first element that is not.
pub fn check_elements(items: &[FieldDef], v: &Value) -> Result<(), String> {
    let Some(list) = v.as_array() else {
        return Err("must be a JSON array".into());
    };
    for (i, e) in list.iter().enumerate() {
        let Some(obj) = e.as_object() else {
            return Err(format!("element {i} must be an object of sub-fields"));
        };
        for (k, x) in obj {
            let Some(s) = items.iter().find(|s| &s.field_name == k) else {
                return Err(format!("element {i} names an unknown sub-field '{k}'"));
            };
            if !x.is_null() && !fits(&s.data_type, x) {
                return Err(format!(
                    "element {i}: '{k}' must be {}",
                    wanted(&s.data_type)
                ));
            }
        }
    }
    Ok(())
}

/// The normalized JSON Schema of a field list.
pub fn to_definition(fields: &[FieldDef]) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in fields {
        let mut p = Map::new();
        let (t, fmt) = match f.data_type.as_str() {
            "date" => ("string", Some("date".to_string())),
            "currency" => ("string", Some("currency".to_string())),
            other => (other, f.format.clone()),
        };
        p.insert("type".into(), json!(t));
        if let Some(title) = &f.title {
            p.insert("title".into(), json!(title));
        }
        if let Some(d) = &f.description {
            p.insert("description".into(), json!(d));
        }
        if let Some(e) = &f.enum_values {
            p.insert("enum".into(), json!(e));
        }
        if let Some(fmt) = fmt {
            p.insert("format".into(), json!(fmt));
        }
        p.insert("x-display-name".into(), json!(f.display_name));
        if !f.synonyms.is_empty() {
            p.insert("x-synonyms".into(), json!(f.synonyms));
        }
        if !f.depends_on.is_empty() {
            p.insert("x-depends-on".into(), json!(f.depends_on));
        }
        if f.requires_review {
            p.insert("x-requires-review".into(), json!(true));
        }
        if let Some(items) = &f.items {
            p.insert("items".into(), to_definition(items));
        }
        if f.is_required {
            required.push(f.field_name.clone());
        }
        props.insert(f.field_name.clone(), Value::Object(p));
    }
    json!({ "type": "object", "properties": props, "required": required })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_property_title_is_kept_as_title_and_names_the_field() {
        let def = json!({"type": "object", "properties": {
            "vendor": {"type": "string", "title": "Supplier"},
            "total": {"type": "number", "title": "Total", "x-display-name": "Grand total"}}});
        let fields = fields_from_definition(&def).unwrap();
        let vendor = fields.iter().find(|f| f.field_name == "vendor").unwrap();
        assert_eq!(vendor.display_name, "Supplier");
        let total = fields.iter().find(|f| f.field_name == "total").unwrap();
        assert_eq!(total.display_name, "Grand total");
        let back = to_definition(&fields);
        assert_eq!(back["properties"]["vendor"]["title"], "Supplier");
        assert_eq!(back["properties"]["total"]["title"], "Total");
        assert!(
            to_definition(&fields_from_input(&json!({"a": "string"})).unwrap())["properties"]["a"]
                .get("title")
                .is_none()
        );
    }

    #[test]
    fn any_form_is_told_by_its_shape() {
        let a = fields_from_any(&json!({"properties": {"total": {"type": "number"}}})).unwrap();
        let b = fields_from_any(&json!([{"field_name": "total", "data_type": "number"}])).unwrap();
        let c = fields_from_any(&json!({"total": "number"})).unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert!(fields_from_any(&json!({"type": "object"}))
            .unwrap()
            .is_empty());
        assert!(fields_from_any(&json!("total")).is_err());
    }

    #[test]
    fn three_input_forms_agree() {
        let map =
            fields_from_input(&json!({"invoice_number": "string", "total": "number"})).unwrap();
        let list = fields_from_input(&json!([
            {"field_name": "invoice_number", "data_type": "string"},
            {"field_name": "total", "data_type": "number"}
        ]))
        .unwrap();
        let def = fields_from_definition(&json!({"type": "object", "properties": {
            "invoice_number": {"type": "string"}, "total": {"type": "number"}}}))
        .unwrap();
        assert_eq!(map, list);
        assert_eq!(list, def);
        assert_eq!(map[0].display_name, "Invoice Number");
    }

    #[test]
    fn definition_round_trips_with_extensions() {
        let input = json!({"type": "object", "properties": {
            "net": {"type": "number", "x-synonyms": ["subtotal"]},
            "issued": {"type": "string", "format": "date", "x-requires-review": true},
            "total": {"type": "number", "x-depends-on": ["net"], "x-display-name": "Grand total"}},
            "required": ["total"]});
        let fields = validate_fields(fields_from_definition(&input).unwrap()).unwrap();
        assert_eq!(fields[1].data_type, "date");
        assert!(fields[1].requires_review);
        assert!(fields[2].is_required);
        let again = fields_from_definition(&to_definition(&fields)).unwrap();
        assert_eq!(again, fields);
    }

    #[test]
    fn invalid_fields_are_refused() {
        let bad = |v: Value| validate_fields(fields_from_input(&v).unwrap_or_default());
        assert!(bad(json!({})).unwrap_err().contains("no fields"));
        assert!(bad(json!({"Total": "number"}))
            .unwrap_err()
            .contains("must match"));
        assert!(fields_from_input(&json!({"a": "money"})).is_err());
        assert!(bad(json!([{"field_name": "a", "depends_on": ["b"]}]))
            .unwrap_err()
            .contains("unknown"));
        let cyc = json!([{"field_name": "a", "depends_on": ["b"]}, {"field_name": "b", "depends_on": ["a"]}]);
        assert!(bad(cyc).unwrap_err().contains("cycle"));
        let dup = json!([{"field_name": "a"}, {"field_name": "a"}]);
        assert!(bad(dup).unwrap_err().contains("twice"));
    }

    #[test]
    fn an_array_of_objects_reads_alike_in_the_three_forms_and_round_trips() {
        let list = validate_fields(
            fields_from_input(
                &json!([{"field_name": "lines", "data_type": "array", "items": [
                {"field_name": "description"}, {"field_name": "amount", "data_type": "number"}]}]),
            )
            .unwrap(),
        )
        .unwrap();
        let map =
            fields_from_input(&json!({"lines": [{"description": "string", "amount": "number"}]}))
                .unwrap();
        let def = fields_from_definition(&json!({"type": "object", "properties": {"lines": {
            "type": "array", "items": {"type": "object", "properties": {
                "description": {"type": "string"}, "amount": {"type": "number"}}}}}}))
        .unwrap();
        assert_eq!(list, map);
        assert_eq!(map, def);
        let items = list[0].items.as_ref().unwrap();
        assert_eq!(items[1].field_name, "amount");
        assert_eq!(items[1].data_type, "number");
        let back = to_definition(&list);
        assert_eq!(
            back["properties"]["lines"]["items"]["properties"]["amount"]["type"],
            "number"
        );
        assert_eq!(fields_from_definition(&back).unwrap(), list);
        let plain = fields_from_definition(&json!({"properties": {"tags": {
            "type": "array", "items": {"type": "string"}}}}))
        .unwrap();
        assert_eq!(
            plain[0].items, None,
            "a list of bare values has no sub-fields"
        );
    }

    #[test]
    fn items_are_refused_where_they_cannot_mean_anything() {
        let bad = |v: Value| fields_from_input(&v).and_then(validate_fields).unwrap_err();
        assert!(
            bad(json!([{"field_name": "a", "data_type": "string", "items": {"x": "string"}}]))
                .contains("only an array field has items")
        );
        assert!(bad(json!({"lines": [{"inner": "array"}]})).contains("scalar type"));
        assert!(bad(json!({"lines": [{"Bad": "string"}]})).contains("sub-field name 'Bad'"));
        assert!(bad(json!({"lines": [{}]})).contains("1-100 sub-fields"));
        assert!(bad(json!({"lines": [{"a": "money"}]})).contains("fields.lines[0]"));
        assert!(bad(json!({"lines": [{"a": "string"}, {"b": "string"}]})).contains("one object"));
        assert!(bad(json!([{"field_name": "lines", "data_type": "array",
            "items": [{"field_name": "a", "depends_on": ["b"]}, {"field_name": "b"}]}]))
        .contains("cannot have depends_on"));
        let def = json!({"properties": {"lines": {"type": "array", "items": {
            "type": "object", "properties": {"n": {"type": "money"}}}}}});
        assert!(fields_from_definition(&def)
            .unwrap_err()
            .starts_with("definition.properties.lines.items.properties.n.type"));
    }

    #[test]
    fn merge_replaces_in_place_and_appends() {
        let base = fields_from_input(&json!({"a": "string", "b": "string"})).unwrap();
        let merged = merge_fields(
            &base,
            fields_from_input(&json!({"b": "number", "c": "date"})).unwrap(),
        );
        let names: Vec<_> = merged
            .iter()
            .map(|f| (f.field_name.as_str(), f.data_type.as_str()))
            .collect();
        assert_eq!(names, vec![("a", "string"), ("b", "number"), ("c", "date")]);
    }
}
