//! Chat templates: the Jinja templates of Hugging Face models (`tokenizer.chat_template`),
//! rendered with minijinja in the environment `transformers` gives them.
//!
//! `transformers` renders with Jinja2's `ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True)` plus the `loopcontrols` extension, a `raise_exception(message)` global, a
//! `strftime_now(format)` global and a `tojson` filter that is `json.dumps(x, ensure_ascii=False,
//! indent=None, separators=None, sort_keys=False)` (no HTML escaping, Python's `", "` / `": "`
//! separators). This module sets up the same: minijinja with trim/lstrip blocks, loop controls,
//! Python string and dict methods (`.strip()`, `.split()`, `.items()`, `.get()`, … from
//! `minijinja-contrib`), and those three additions written to behave as Python's.

use crate::TokenizerError;
use minijinja::value::{Kwargs, Rest, Value};
use minijinja::{Environment, Error, ErrorKind, State};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// One chat message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool`, …
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message { role: role.into(), content: content.into() }
    }
}

/// Settings of one rendering.
#[derive(Clone, Debug, Default)]
pub struct ChatOptions {
    /// End with the header of an assistant turn (the prompt for generation).
    pub add_generation_prompt: bool,
    /// The template's `bos_token` variable (the BOS token's text, e.g. `<bos>`).
    pub bos_token: String,
    /// The template's `eos_token` variable.
    pub eos_token: String,
    /// More template variables: `tools`, `reasoning_effort`, `builtin_tools`, … (top-level keys).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The time `strftime_now` formats, in seconds since the Unix epoch (UTC); `None` for the
    /// system clock. Set it to make renderings reproducible.
    pub now: Option<i64>,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

const NAME: &str = "chat_template";
const NOW_VAR: &str = "__kiln_now";

impl ChatTemplate {
    /// Compiles `source`. Syntax errors are reported here, with their line.
    pub fn new(source: &str) -> Result<ChatTemplate, TokenizerError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_owned())?;
        Ok(ChatTemplate { env })
    }

    /// Renders `messages` (each a `{role, content}` object).
    pub fn render(&self, messages: &[Message], options: &ChatOptions) -> Result<String, TokenizerError> {
        let messages =
            serde_json::to_value(messages).map_err(|e| TokenizerError::Template(format!("messages: {e}")))?;
        self.render_json(&messages, options)
    }

    /// Renders messages given as JSON (any fields a template reads: `tool_calls`, `thinking`, …).
    pub fn render_json(&self, messages: &serde_json::Value, options: &ChatOptions) -> Result<String, TokenizerError> {
        let mut ctx = options.extra.clone();
        ctx.insert("messages".into(), messages.clone());
        ctx.insert("add_generation_prompt".into(), options.add_generation_prompt.into());
        ctx.insert("bos_token".into(), options.bos_token.clone().into());
        ctx.insert("eos_token".into(), options.eos_token.clone().into());
        let now = options.now.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
        });
        ctx.insert(NOW_VAR.into(), now.into());
        let tmpl = self.env.get_template(NAME)?;
        Ok(tmpl.render(Value::from_serialize(&ctx))?)
    }
}

/// Renders `messages` with `template` (one-off; compile a [`ChatTemplate`] to render many).
pub fn render_chat(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, TokenizerError> {
    let options = ChatOptions {
        add_generation_prompt,
        bos_token: bos_token.to_owned(),
        eos_token: eos_token.to_owned(),
        ..ChatOptions::default()
    };
    ChatTemplate::new(template)?.render(messages, &options)
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the rendering's time (UTC) formatted like Python's `strftime`.
fn strftime_now(state: &State, format: String) -> Result<Value, Error> {
    let now = state.lookup(NOW_VAR).and_then(|v| i64::try_from(v).ok()).unwrap_or(0);
    Ok(Value::from(strftime(now, &format)?))
}

/// The civil date of day `z` since 1970-01-01 (proleptic Gregorian; Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn strftime(unix: i64, format: &str) -> Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            out.push('%');
            break;
        };
        let month = MONTHS[(m - 1) as usize];
        let day = DAYS[weekday];
        let _ = match spec {
            'Y' => write!(out, "{y}"),
            'y' => write!(out, "{:02}", y.rem_euclid(100)),
            'm' => write!(out, "{m:02}"),
            'd' => write!(out, "{d:02}"),
            'e' => write!(out, "{d:2}"),
            'H' => write!(out, "{hh:02}"),
            'I' => write!(out, "{:02}", if hh % 12 == 0 { 12 } else { hh % 12 }),
            'p' => write!(out, "{}", if hh < 12 { "AM" } else { "PM" }),
            'M' => write!(out, "{mm:02}"),
            'S' => write!(out, "{ss:02}"),
            'j' => write!(out, "{yday:03}"),
            'B' => write!(out, "{month}"),
            'b' | 'h' => write!(out, "{}", &month[..3]),
            'A' => write!(out, "{day}"),
            'a' => write!(out, "{}", &day[..3]),
            'F' => write!(out, "{y}-{m:02}-{d:02}"),
            'T' => write!(out, "{hh:02}:{mm:02}:{ss:02}"),
            '%' => write!(out, "%"),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: unsupported format %{other}"),
                ));
            }
        };
    }
    Ok(out)
}

/// `tojson` as `transformers` defines it: Python's `json.dumps(x, ensure_ascii=False,
/// indent=None, separators=None, sort_keys=False)`, arguments positional or by name.
fn tojson(value: Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let positional = |i: usize| args.0.get(i).cloned();
    let arg = |i: usize, name: &str| -> Result<Option<Value>, Error> {
        let named: Option<Value> = kwargs.get(name)?;
        Ok(named.or_else(|| positional(i)).filter(|v| !v.is_none() && !v.is_undefined()))
    };
    let ensure_ascii = arg(0, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let indent = match arg(1, "indent")? {
        None => None,
        Some(v) => match i64::try_from(v.clone()) {
            Ok(n) => Some(" ".repeat(n.max(0) as usize)),
            Err(_) => Some(v.as_str().map(str::to_owned).ok_or_else(|| {
                Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an integer or a string")
            })?),
        },
    };
    let separators = match arg(2, "separators")? {
        None => None,
        Some(v) => {
            let parts: Vec<String> = v
                .try_iter()?
                .map(|p| p.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings"))?;
            match parts.as_slice() {
                [item, key] => Some((item.clone(), key.clone())),
                _ => {
                    return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings"));
                }
            }
        }
    };
    let sort_keys = arg(3, "sort_keys")?.is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let json =
        serde_json::to_value(&value).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let (item_sep, key_sep) =
        separators.unwrap_or_else(|| (if indent.is_some() { "," } else { ", " }.to_owned(), ": ".to_owned()));
    let style = PyJson { indent, item_sep, key_sep, ensure_ascii, sort_keys };
    let mut out = String::new();
    style.write(&json, 0, &mut out);
    Ok(Value::from(out))
}

/// Python `json.dumps` formatting.
struct PyJson {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

impl PyJson {
    fn newline(&self, level: usize, out: &mut String) {
        if let Some(ind) = &self.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    }

    fn write(&self, v: &serde_json::Value, level: usize, out: &mut String) {
        use serde_json::Value as J;
        match v {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Number(n) => {
                if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                    out.push_str(&py_float(f));
                } else {
                    out.push_str(&n.to_string());
                }
            }
            J::String(s) => self.string(s, out),
            J::Array(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(level + 1, out);
                    self.write(item, level + 1, out);
                }
                self.newline(level, out);
                out.push(']');
            }
            J::Object(map) => {
                if map.is_empty() {
                    out.push_str("{}");
                    return;
                }
                let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (k, val)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(level + 1, out);
                    self.string(k, out);
                    out.push_str(&self.key_sep);
                    self.write(val, level + 1, out);
                }
                self.newline(level, out);
                out.push('}');
            }
        }
    }

    fn string(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0C}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c if self.ensure_ascii && !c.is_ascii() => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python's `repr` of a float (shortest round-trip digits, `1.0`, `1e+20`, `inf` as JSON's
/// `Infinity`).
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    // Rust's `{:?}` gives the shortest round-trip digits; switch to Python's exponent style
    // outside [1e-4, 1e16).
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{f:e}"); // e.g. "1e20", "1.5e-7"
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        return format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    format!("{f:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_dates() {
        // 2024-02-29 13:05:09 UTC = 1709211909 (hand-checked with `date -u -d @1709211909`).
        assert_eq!(strftime(1_709_211_909, "%Y-%m-%d %H:%M:%S").unwrap(), "2024-02-29 13:05:09");
        assert_eq!(strftime(1_709_211_909, "%d %B %Y, %A %j").unwrap(), "29 February 2024, Thursday 060");
        assert_eq!(strftime(0, "%a %b %e %I %p").unwrap(), "Thu Jan  1 12 AM");
        assert!(strftime(0, "%Q").is_err());
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let t = ChatTemplate::new(
            "{{ x|tojson }}|{{ x|tojson(indent=2) }}|{{ x|tojson(sort_keys=true, separators=(',', ':')) }}|{{ s|tojson }}",
        )
        .unwrap();
        let mut o = ChatOptions::default();
        o.extra.insert("x".into(), serde_json::json!({"b": [1, 2.5, true, null], "a": {}, "c": []}));
        o.extra.insert("s".into(), serde_json::json!("<é\"\n\u{1}>"));
        // Expected strings from Python 3.11: json.dumps(x, ensure_ascii=False, ...).
        assert_eq!(
            t.render(&[], &o).unwrap(),
            "{\"b\": [1, 2.5, true, null], \"a\": {}, \"c\": []}|{\n  \"b\": [\n    1,\n    2.5,\n    true,\n    null\n  ],\n  \"a\": {},\n  \"c\": []\n}|{\"a\":{},\"b\":[1,2.5,true,null],\"c\":[]}|\"<é\\\"\\n\\u0001>\""
        );
    }

    #[test]
    fn raise_exception_is_an_error_with_the_message() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}").unwrap();
        let e = t.render(&[], &ChatOptions::default()).unwrap_err().to_string();
        assert!(e.contains("no system role"), "{e}");
    }

    #[test]
    fn python_floats() {
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(0.1), "0.1");
        assert_eq!(py_float(1e20), "1e+20");
        assert_eq!(py_float(1.5e-7), "1.5e-07");
        assert_eq!(py_float(12345.678), "12345.678");
    }
}
