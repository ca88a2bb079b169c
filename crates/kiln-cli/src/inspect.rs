//! `kiln inspect`: a report of a GGUF file, as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kiln_gguf::{ArrayRef, GgufFile, ValueRef};
use serde::Serialize;
use serde_json::{Value as Json, json};

/// Arrays up to this length are shown whole; longer ones are summarised.
const ARRAY_FULL: usize = 64;
/// How many leading elements a summarised array shows.
const ARRAY_HEAD: usize = 16;
/// Text output shows this many leading elements of an array.
const TEXT_HEAD: usize = 6;
/// Text output cuts strings longer than this many characters.
const TEXT_STR: usize = 72;

#[derive(Serialize)]
pub struct Report {
    file: String,
    version: u32,
    alignment: u64,
    data_offset: u64,
    file_size: u64,
    metadata: Vec<Json>,
    tensors: Vec<TensorRow>,
    type_totals: Vec<TypeTotal>,
    parameters: u64,
    tensor_bytes: u64,
    bits_per_weight: f64,
}

#[derive(Serialize)]
struct TensorRow {
    name: String,
    #[serde(rename = "type")]
    ty: &'static str,
    shape: Vec<u64>,
    offset: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct TypeTotal {
    #[serde(rename = "type")]
    ty: &'static str,
    tensors: u64,
    elements: u64,
    bytes: u64,
}

impl Report {
    pub fn new(path: &str, file: &GgufFile) -> Report {
        let metadata = file.metadata().map(|(k, v)| meta_json(k, v)).collect();
        let tensors: Vec<TensorRow> = file
            .tensors()
            .iter()
            .map(|t| TensorRow {
                name: t.name.clone(),
                ty: t.ty.name(),
                shape: t.shape.clone(),
                offset: t.offset,
                bytes: t.size,
            })
            .collect();
        let mut totals: BTreeMap<&'static str, TypeTotal> = BTreeMap::new();
        for t in file.tensors() {
            let e =
                totals.entry(t.ty.name()).or_insert(TypeTotal { ty: t.ty.name(), tensors: 0, elements: 0, bytes: 0 });
            e.tensors += 1;
            e.elements += t.n_elements();
            e.bytes += t.size;
        }
        let mut type_totals: Vec<TypeTotal> = totals.into_values().collect();
        type_totals.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.ty.cmp(b.ty)));
        let parameters: u64 = type_totals.iter().map(|t| t.elements).sum();
        let tensor_bytes: u64 = type_totals.iter().map(|t| t.bytes).sum();
        let bits_per_weight = if parameters == 0 { 0.0 } else { tensor_bytes as f64 * 8.0 / parameters as f64 };
        Report {
            file: path.to_string(),
            version: file.version(),
            alignment: file.alignment(),
            data_offset: file.data_offset(),
            file_size: file.file_size(),
            metadata,
            tensors,
            type_totals,
            parameters,
            tensor_bytes,
            bits_per_weight,
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("report serializes");
        s.push('\n');
        s
    }

    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "file:        {}", self.file);
        let _ = writeln!(
            o,
            "format:      GGUF v{}, alignment {}, tensor data at 0x{:x}, {} bytes ({})",
            self.version,
            self.alignment,
            self.data_offset,
            self.file_size,
            human_bytes(self.file_size)
        );
        let _ = writeln!(o, "parameters:  {} ({})", self.parameters, human_count(self.parameters));
        let _ = writeln!(
            o,
            "weights:     {} bytes ({}), {:.3} bits per weight",
            self.tensor_bytes,
            human_bytes(self.tensor_bytes),
            self.bits_per_weight
        );

        let _ = writeln!(o, "\nmetadata ({} keys):", self.metadata.len());
        let kw = self.metadata.iter().map(|m| m["key"].as_str().unwrap_or("").len()).max().unwrap_or(0);
        for m in &self.metadata {
            let key = m["key"].as_str().unwrap_or("");
            let _ = writeln!(o, "  {key:<kw$}  {:<14} {}", type_label(m), text_value(m));
        }

        let _ = writeln!(o, "\ntensors ({}):", self.tensors.len());
        let nw = self.tensors.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
        let shapes: Vec<String> = self.tensors.iter().map(|t| shape_text(&t.shape)).collect();
        let sw = shapes.iter().map(|s| s.len()).max().unwrap_or(5).max(5);
        let _ = writeln!(o, "  {:<nw$}  {:<7} {:<sw$}  {:>12}  {:>12}", "name", "type", "shape", "offset", "bytes");
        for (t, shape) in self.tensors.iter().zip(&shapes) {
            let _ = writeln!(
                o,
                "  {:<nw$}  {:<7} {:<sw$}  {:>12}  {:>12}",
                t.name,
                t.ty,
                shape,
                format!("0x{:x}", t.offset),
                t.bytes
            );
        }

        let _ = writeln!(o, "\nby type:");
        let _ = writeln!(o, "  {:<7} {:>7}  {:>14}  {:>14}  {:>6}", "type", "tensors", "elements", "bytes", "share");
        for t in &self.type_totals {
            let share = if self.tensor_bytes == 0 { 0.0 } else { 100.0 * t.bytes as f64 / self.tensor_bytes as f64 };
            let _ = writeln!(o, "  {:<7} {:>7}  {:>14}  {:>14}  {:>5.1}%", t.ty, t.tensors, t.elements, t.bytes, share);
        }
        o
    }
}

/// One metadata entry as JSON: `{key, type, value}` or, for arrays,
/// `{key, type: "array", element_type, len, values, truncated}`.
fn meta_json(key: &str, v: ValueRef<'_>) -> Json {
    let mut obj = json!({ "key": key });
    match v {
        ValueRef::Array(a) => {
            if let (Json::Object(o), Json::Object(arr)) = (&mut obj, array_json(a)) {
                o.extend(arr);
            }
        }
        v => {
            obj["type"] = json!(v.value_type().name());
            obj["value"] = scalar_json(v);
            if matches!(v, ValueRef::String(b) if std::str::from_utf8(b).is_err()) {
                obj["lossy"] = json!(true);
            }
        }
    }
    obj
}

fn array_json(a: ArrayRef<'_>) -> Json {
    let len = a.len();
    let shown = if len <= ARRAY_FULL { len } else { ARRAY_HEAD };
    let values: Vec<Json> = a
        .iter()
        .take(shown)
        .map(|v| match v {
            ValueRef::Array(inner) => array_json(inner),
            v => scalar_json(v),
        })
        .collect();
    json!({
        "type": "array",
        "element_type": a.elem_type().name(),
        "len": len,
        "truncated": shown < len,
        "values": values,
    })
}

fn scalar_json(v: ValueRef<'_>) -> Json {
    match v {
        ValueRef::U8(x) => json!(x),
        ValueRef::I8(x) => json!(x),
        ValueRef::U16(x) => json!(x),
        ValueRef::I16(x) => json!(x),
        ValueRef::U32(x) => json!(x),
        ValueRef::I32(x) => json!(x),
        ValueRef::U64(x) => json!(x),
        ValueRef::I64(x) => json!(x),
        // JSON has no NaN or infinity: those become strings.
        ValueRef::F32(x) => float_json(x as f64),
        ValueRef::F64(x) => float_json(x),
        ValueRef::Bool(x) => json!(x),
        ValueRef::String(b) => json!(String::from_utf8_lossy(b)),
        ValueRef::Array(a) => array_json(a),
    }
}

fn float_json(x: f64) -> Json {
    if x.is_finite() { json!(x) } else { json!(x.to_string()) }
}

fn type_label(m: &Json) -> String {
    match m["type"].as_str() {
        Some("array") => format!("array<{}>", m["element_type"].as_str().unwrap_or("?")),
        Some(t) => t.to_string(),
        None => "?".into(),
    }
}

fn text_value(m: &Json) -> String {
    match m["type"].as_str() {
        Some("array") => text_array(m),
        // Shortest text that reads back as the same f32 (JSON holds the exact f64 widening).
        Some("f32") => match m["value"].as_f64() {
            Some(x) => format!("{:?}", x as f32),
            None => text_scalar(&m["value"]),
        },
        _ => text_scalar(&m["value"]),
    }
}

fn text_array(a: &Json) -> String {
    let len = a["len"].as_u64().unwrap_or(0) as usize;
    let vals = a["values"].as_array().cloned().unwrap_or_default();
    let items: Vec<String> = vals
        .iter()
        .take(TEXT_HEAD)
        .map(|v| if v.get("type") == Some(&json!("array")) { format!("[{} items]", v["len"]) } else { text_scalar(v) })
        .collect();
    let more = len.saturating_sub(items.len());
    let tail = if more > 0 { format!(", … {more} more") } else { String::new() };
    format!("[{len}] [{}{tail}]", items.join(", "))
}

fn text_scalar(v: &Json) -> String {
    match v {
        Json::String(s) => {
            let escaped = escape(s);
            let count = escaped.chars().count();
            if count > TEXT_STR {
                let cut: String = escaped.chars().take(TEXT_STR).collect();
                format!("\"{cut}\"… ({} chars)", s.chars().count())
            } else {
                format!("\"{escaped}\"")
            }
        }
        v => v.to_string(),
    }
}

/// Escapes quotes, backslashes and control characters; leaves other text as it is.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

fn shape_text(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{x:.2} {}", UNITS[u]) }
}

fn human_count(n: u64) -> String {
    let x = n as f64;
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.2} K", x / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} M", x / 1e6),
        _ => format!("{:.2} B", x / 1e9),
    }
}
