//! Checks a JSON value against a schema of an OpenAPI document: the types, enums and required
//! properties it names, and no property it does not name. Enough of JSON Schema for what utoipa
//! writes here: `$ref` into the components, `allOf` (flattened fields), `oneOf` (alternatives,
//! nullable references) and `type` lists (nullable fields).
//!
//! Shared by the api crate's tests (the edge protocol's types against their description) and the
//! end-to-end tests (real answers against the served document), which include this file.

use serde_json::{Map, Value};

/// `Ok` when `value` fits `schema`; otherwise where and how it does not.
pub fn check(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    check_at(doc, schema, value, "$")
}

fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> Result<&'a Value, String> {
    while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .ok_or_else(|| format!("unsupported $ref {reference}"))?;
        schema = doc
            .get("components")
            .and_then(|components| components.get("schemas"))
            .and_then(|schemas| schemas.get(name))
            .ok_or_else(|| format!("no schema {name}"))?;
    }
    Ok(schema)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check_at(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema)?;
    if let Some(options) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        let mut failures = Vec::new();
        for option in options {
            match check_at(doc, option, value, at) {
                Ok(()) => return Ok(()),
                Err(failure) => failures.push(failure),
            }
        }
        return Err(format!("{at}: fits none of the alternatives: {failures:?}"));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(types) = schema.get("type") {
        let names: Vec<&str> = match types {
            Value::String(name) => vec![name.as_str()],
            Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let actual = type_name(value);
        let fits = names
            .iter()
            .any(|name| *name == actual || (*name == "number" && actual == "integer"));
        if !fits {
            return Err(format!("{at}: {actual} where the schema says {names:?}"));
        }
    }
    match value {
        Value::Object(object) => check_object(doc, schema, object, at),
        Value::Array(items) => match schema.get("items") {
            Some(item_schema) => items.iter().enumerate().try_for_each(|(index, item)| {
                check_at(doc, item_schema, item, &format!("{at}[{index}]"))
            }),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The properties and required names of an object schema, merged over its `allOf` parts.
#[derive(Default)]
struct Shape<'a> {
    described: bool,
    open: bool,
    properties: Map<String, Value>,
    required: Vec<&'a str>,
}

fn shape<'a>(doc: &'a Value, schema: &'a Value, shape: &mut Shape<'a>) -> Result<(), String> {
    let schema = resolve(doc, schema)?;
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        shape.described = true;
        for (name, property) in properties {
            shape.properties.insert(name.clone(), property.clone());
        }
    }
    if let Some(names) = schema.get("required").and_then(Value::as_array) {
        shape
            .required
            .extend(names.iter().filter_map(Value::as_str));
    }
    if matches!(schema.get("additionalProperties"), Some(open) if open != &Value::Bool(false)) {
        shape.open = true;
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        self::shape(doc, part, shape)?;
    }
    Ok(())
}

fn check_object(
    doc: &Value,
    schema: &Value,
    object: &Map<String, Value>,
    at: &str,
) -> Result<(), String> {
    let mut found = Shape::default();
    shape(doc, schema, &mut found)?;
    if !found.described {
        // A free-form object.
        return Ok(());
    }
    for name in &found.required {
        if !object.contains_key(*name) {
            return Err(format!("{at}: required property {name:?} is missing"));
        }
    }
    for (key, item) in object {
        match found.properties.get(key) {
            Some(property) => check_at(doc, property, item, &format!("{at}.{key}"))?,
            None if found.open => {}
            None => return Err(format!("{at}: property {key:?} is not in the schema")),
        }
    }
    Ok(())
}
