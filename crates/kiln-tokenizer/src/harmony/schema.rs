//! A function tool's JSON Schema as the TypeScript-like type that a harmony developer message
//! declares it with, written the way `openai-harmony` 0.0.8 writes it (the render fixtures compare
//! the two), including where that reads oddly:
//!
//! * an object's fields are indented by the depth of the object (the top level not at all), and
//!   its closing brace by the same amount; an array's items are written at the array's depth;
//! * an object's `description` is a `// …` line before its `{` (after `name: ` when it is a field);
//! * `enum` is a union only on `type: "string"`; `anyOf`, `allOf`, `const`, `$ref`, `type: "null"`
//!   and a schema without `type` are `any`; `additionalProperties` is left out (an object without
//!   `properties` is `{}` across two lines);
//! * `T[]` is written after a union without parentheses (`"a" | "b"[]`);
//! * a `default` is a `// default: …` comment: a string in quotes as it is (not escaped), a string
//!   of an enum without quotes, anything else as compact JSON; inside a `oneOf` that is not a
//!   field's, a string of an enum is compact JSON;
//! * comments (`title`, `description`, `examples`) are written as they are, line breaks included.

use serde_json::Value;

/// `schema` as a type; `indent` is written before each field of an object (and its closing brace).
pub(super) fn typescript(schema: &Value, indent: &str) -> String {
    if let Some(variants) = schema.get("oneOf").and_then(Value::as_array) {
        return one_of(variants, indent);
    }
    if let Some(types) = schema.get("type").and_then(Value::as_array) {
        let names: Vec<&str> = types.iter().filter_map(Value::as_str).map(number_name).collect();
        if !names.is_empty() {
            return names.join(" | ");
        }
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => object(schema, indent),
        Some("string") => string_enum(schema).unwrap_or_else(|| "string".to_owned()),
        Some("number" | "integer") => "number".to_owned(),
        Some("boolean") => "boolean".to_owned(),
        Some("array") => match schema.get("items") {
            Some(items) => format!("{}[]", typescript(items, indent)),
            None => "Array<any>".to_owned(),
        },
        _ => "any".to_owned(),
    }
}

/// A name of a type list: `integer` is `number`, the others stay as they are.
fn number_name(t: &str) -> &str {
    if t == "integer" { "number" } else { t }
}

/// The union of a string enum's strings, if it has any.
fn string_enum(schema: &Value) -> Option<String> {
    let values: Vec<String> =
        schema.get("enum")?.as_array()?.iter().filter_map(Value::as_str).map(|s| format!("\"{s}\"")).collect();
    (!values.is_empty()).then(|| values.join(" | "))
}

/// Whether `schema` has a non-empty `enum`.
fn is_enum(schema: &Value) -> bool {
    schema.get("enum").and_then(Value::as_array).is_some_and(|e| !e.is_empty())
}

/// `schema[key]` if it is a string.
fn text<'v>(schema: &'v Value, key: &str) -> Option<&'v str> {
    schema.get(key).and_then(Value::as_str)
}

/// How a string default of an enum is written.
#[derive(Clone, Copy)]
enum EnumString {
    /// As it is: `celsius`.
    Bare,
    /// As JSON: `"celsius"`.
    Json,
}

/// The text after `default: ` for `schema`'s `default`.
fn default_text(schema: &Value, default: &Value, enum_string: EnumString) -> String {
    match (default.as_str(), enum_string) {
        (Some(s), _) if !is_enum(schema) => format!("\"{s}\""),
        (Some(s), EnumString::Bare) => s.to_owned(),
        _ => default.to_string(),
    }
}

/// `schema`'s type, with ` | null` added when it is `nullable` and does not already say `null`.
fn with_nullable(schema: &Value, indent: &str) -> String {
    let t = typescript(schema, indent);
    if schema.get("nullable").and_then(Value::as_bool) == Some(true) && !t.contains("null") { t + " | null" } else { t }
}

/// ` // a b` for the notes `[a, b]`; nothing for none.
fn push_notes(out: &mut String, notes: &[String]) {
    if !notes.is_empty() {
        out.push_str(" // ");
        out.push_str(&notes.join(" "));
    }
}

/// A `oneOf` that is not a field's: each variant on a line of its own after ` | `, with its
/// description and default as a comment.
fn one_of(variants: &[Value], indent: &str) -> String {
    let inner = format!("{indent}   ");
    let mut out = String::new();
    for v in variants {
        out.push_str(&format!("\n{indent} | {}", with_nullable(v, &inner)));
        let mut notes: Vec<String> = text(v, "description").map(str::to_owned).into_iter().collect();
        if let Some(d) = v.get("default") {
            notes.push(format!("default: {}", default_text(v, d, EnumString::Json)));
        }
        push_notes(&mut out, &notes);
    }
    out
}

/// An object: its description, then `{`, a field per property (`?` after the optional ones), `}`.
fn object(schema: &Value, indent: &str) -> String {
    let mut out = String::new();
    if let Some(d) = text(schema, "description") {
        out.push_str(&format!("{indent}// {d}\n"));
    }
    out.push_str("{\n");
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, property) in properties {
            let mark = if required.contains(&name.as_str()) { "" } else { "?" };
            field(&mut out, name, mark, property, indent);
        }
    }
    out.push_str(&format!("{indent}}}"));
    out
}

/// One field of an object: comments (title, description, examples), then `name?: type,` and its
/// default; a `oneOf` field lists its variants on lines of their own.
fn field(out: &mut String, name: &str, mark: &str, property: &Value, indent: &str) {
    if let Some(title) = text(property, "title") {
        out.push_str(&format!("{indent}// {title}\n{indent}//\n"));
    }
    let has_one_of = property.get("oneOf").is_some();
    let description = text(property, "description");
    if let (false, Some(d)) = (has_one_of, description) {
        out.push_str(&format!("{indent}// {d}\n"));
    }
    if let Some(examples) = property.get("examples").and_then(Value::as_array).filter(|e| !e.is_empty()) {
        out.push_str(&format!("{indent}// Examples:\n"));
        for example in examples.iter().filter_map(Value::as_str) {
            out.push_str(&format!("{indent}// - \"{example}\"\n"));
        }
    }
    if let Some(variants) = property.get("oneOf").and_then(Value::as_array) {
        // The description goes above the field, unless the first variant has the same one.
        let above = description.filter(|&d| variants.first().and_then(|v| text(v, "description")) != Some(d));
        if let Some(d) = above {
            out.push_str(&format!("{indent}// {d}\n"));
        }
        if let Some(d) = property.get("default") {
            out.push_str(&format!("{indent}// default: {}\n", default_text(property, d, EnumString::Bare)));
        }
        out.push_str(&format!("{indent}{name}{mark}:\n"));
        let inner = format!("{indent}   ");
        for (i, v) in variants.iter().enumerate() {
            out.push_str(&format!("{indent} | {}", with_nullable(v, &inner)));
            let mut notes = Vec::new();
            if !(i == 0 && above.is_some())
                && let Some(d) = text(v, "description").filter(|&d| Some(d) != description)
            {
                notes.push(d.to_owned());
            }
            if let Some(d) = v.get("default") {
                notes.push(format!("default: {}", default_text(v, d, EnumString::Bare)));
            }
            push_notes(out, &notes);
            out.push('\n');
        }
        out.push_str(&format!("{indent},\n"));
        return;
    }
    out.push_str(&format!("{indent}{name}{mark}: {},", with_nullable(property, &format!("{indent}    "))));
    if let (false, Some(d)) = (has_one_of, property.get("default")) {
        out.push_str(&format!(" // default: {}", default_text(property, d, EnumString::Bare)));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::typescript;
    use serde_json::json;

    // Hand-worked examples of the rules above; the render fixtures check them against the library.
    #[test]
    fn shapes() {
        assert_eq!(typescript(&json!({"type": ["integer", "null", 3]}), ""), "number | null");
        assert_eq!(typescript(&json!({"type": []}), ""), "any");
        assert_eq!(typescript(&json!({"type": "string", "enum": [1]}), ""), "string");
        assert_eq!(typescript(&json!({"enum": ["a"]}), ""), "any");
        assert_eq!(
            typescript(&json!({"type": "array", "items": {"type": "string", "enum": ["a", "b"]}}), ""),
            "\"a\" | \"b\"[]"
        );
        assert_eq!(typescript(&json!("string"), ""), "any");
        assert_eq!(
            typescript(
                &json!({"type": "object", "properties": {"o": {"type": "object", "properties": {"x": {}}}}}),
                ""
            ),
            "{\no?: {\n    x?: any,\n    },\n}"
        );
    }

    #[test]
    fn defaults() {
        let schema = json!({"type": "object", "properties": {
            "q": {"type": "string", "default": "say \"hi\""},
            "e": {"type": "string", "enum": ["a\"b"], "default": "a\"b"},
            "n": {"type": "number", "default": 1.5},
        }});
        assert_eq!(
            typescript(&schema, ""),
            "{\nq?: string, // default: \"say \"hi\"\"\ne?: \"a\"b\", // default: a\"b\nn?: number, // default: 1.5\n}"
        );
        let one_of = json!({"oneOf": [{"type": "string", "enum": ["a\"b"], "default": "a\"b"}]});
        assert_eq!(typescript(&one_of, ""), "\n | \"a\"b\" // default: \"a\\\"b\"");
    }
}
