//! Chat templates: the Jinja template a chat model ships (GGUF `tokenizer.chat_template`, or
//! `chat_template` in a Hugging Face `tokenizer_config.json`) rendered with `minijinja` the
//! way transformers' `apply_chat_template` renders it with jinja2: `trim_blocks` and
//! `lstrip_blocks` on, loop controls, Python string methods (`.strip()`, `.startswith()`,
//! via `minijinja-contrib`'s pycompat), `raise_exception`, `strftime_now`, and a `tojson`
//! that writes what Python's `json.dumps(ensure_ascii=False)` writes.
use std::path::{Path, PathBuf};

use jetc_gguf::GgufFile;
use minijinja::value::{Kwargs, Value};
use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TextError};
use crate::tokenizer::{read_json_opt, special_token_text};
use crate::Tokenizer;

/// The GGUF key of the default chat template.
pub const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";
const NAME: &str = "chat_template";

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template with the special-token strings it may refer to.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    /// The file and key it came from (for error messages).
    file: String,
    key: String,
    source: String,
    bos_token: String,
    eos_token: String,
    env: Environment<'static>,
}

impl ChatTemplate {
    /// The GGUF file's `tokenizer.chat_template`, or `None` if it has none. `bos_token` and
    /// `eos_token` are the texts of the tokenizer's BOS and EOS ids.
    pub fn from_gguf(file: &GgufFile, tok: &Tokenizer) -> Result<Option<ChatTemplate>> {
        if file.get(KEY_CHAT_TEMPLATE).is_none() {
            return Ok(None);
        }
        let source = file.get_str(KEY_CHAT_TEMPLATE)?;
        let text = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
        ChatTemplate::new(
            &file.path,
            KEY_CHAT_TEMPLATE,
            source,
            text(tok.bos_id()),
            text(tok.eos_id()),
        )
        .map(Some)
    }

    /// The template of a Hugging Face `tokenizer_config.json` (or the one in a directory):
    /// its `chat_template` (a string, or a list of named templates, of which "default" or
    /// else the first is taken), else a `chat_template.jinja` beside it (transformers 5
    /// writes the template there). `None` if there is no such file or no template.
    pub fn from_tokenizer_config(path: &Path) -> Result<Option<ChatTemplate>> {
        let path: PathBuf = if path.is_dir() {
            path.join("tokenizer_config.json")
        } else {
            path.to_path_buf()
        };
        let name = path.display().to_string();
        let dir = path.parent().unwrap_or(Path::new("."));
        let cfg = read_json_opt(&path)?.unwrap_or(serde_json::Value::Null);
        let bos = special_token_text(cfg.get("bos_token")).unwrap_or_default();
        let eos = special_token_text(cfg.get("eos_token")).unwrap_or_default();
        let source = match cfg.get("chat_template") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => {
                fn named(n: &serde_json::Value) -> Option<&str> {
                    n.get("template").and_then(|t| t.as_str())
                }
                let pick = list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .or_else(|| list.first());
                match pick.and_then(named) {
                    Some(t) => Some(t.to_owned()),
                    None => {
                        return Err(TextError::meta(
                            &name,
                            "chat_template",
                            "a list without a {\"name\", \"template\"} entry",
                        ))
                    }
                }
            }
            Some(other) => {
                return Err(TextError::meta(
                    &name,
                    "chat_template",
                    format!("expected a string or a list of named templates, found {other}"),
                ))
            }
        };
        if let Some(s) = source {
            return ChatTemplate::new(&name, "chat_template", &s, bos, eos).map(Some);
        }
        let jinja = dir.join("chat_template.jinja");
        match std::fs::read_to_string(&jinja) {
            Ok(s) => {
                ChatTemplate::new(&jinja.display().to_string(), "template", &s, bos, eos).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TextError::io(&jinja, e)),
        }
    }

    /// Compiles a template; `file` and `key` name where it came from in error messages.
    pub fn new(
        file: &str,
        key: &str,
        source: &str,
        bos_token: String,
        eos_token: String,
    ) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, strip_generation_tags(source))
            .map_err(|e| template_err(file, key, &e))?;
        Ok(ChatTemplate {
            file: file.into(),
            key: key.into(),
            source: source.into(),
            bos_token,
            eos_token,
            env,
        })
    }

    /// The conversation as the model expects it; with `add_generation_prompt`, followed by
    /// the start of the assistant's turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let err = |e: Error| template_err(&self.file, &self.key, &e);
        let tmpl = self.env.get_template(NAME).map_err(err)?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(err)
    }

    /// The template text as stored.
    pub fn source(&self) -> &str {
        &self.source
    }
}

fn template_err(file: &str, key: &str, e: &Error) -> TextError {
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        msg.push_str(&format!(": {c}"));
        cause = c.source();
    }
    TextError::Template {
        file: file.into(),
        key: key.into(),
        msg,
    }
}

/// `raise_exception(msg)`: how HF templates reject a conversation.
fn raise_exception(msg: String) -> std::result::Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("the template raised: {msg}"),
    ))
}

/// Removes transformers' `{% generation %}` / `{% endgeneration %}` tags (they only mark the
/// assistant's text for training masks and have no effect on the output).
fn strip_generation_tags(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(start) = rest.find("{%") {
        let after = &rest[start + 2..];
        let inner = after.trim_start_matches(['-', '+']).trim_start();
        let word_len = inner
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(inner.len());
        let word = &inner[..word_len];
        let tail = inner[word_len..]
            .trim_start()
            .trim_start_matches(['-', '+']);
        if (word == "generation" || word == "endgeneration") && tail.starts_with("%}") {
            out.push_str(&rest[..start]);
            let consumed = rest.len() - tail.len() + 2;
            rest = &rest[consumed..];
        } else {
            out.push_str(&rest[..start + 2]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `tojson(indent=None)` as transformers defines it: `json.dumps(x, ensure_ascii=False,
/// indent=indent)`, so `", "` and `": "` separators, keys in their order.
fn tojson(
    value: Value,
    indent: Option<usize>,
    kwargs: Kwargs,
) -> std::result::Result<Value, Error> {
    let indent = match indent {
        Some(i) => Some(i),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    // Accepted for compatibility; jetc always writes non-ASCII as is and keeps key order.
    let _: Option<Value> = kwargs.get("ensure_ascii")?;
    let _: Option<Value> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    write_py_json(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn write_py_json(v: &serde_json::Value, indent: Option<usize>, depth: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                write_py_json(x, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, x)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_py_json(x, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        // Scalars and empty containers: serde_json writes what Python writes (strings keep
        // non-ASCII characters, as with ensure_ascii=False).
        other => out.push_str(&other.to_string()),
    }
}

/// `strftime_now(format)`: the current UTC time, for templates that print today's date
/// (Llama 3.1). Supports %Y %y %m %d %e %b %B %a %A %H %I %M %S %p %j %%.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime(&format, secs)
}

fn strftime(format: &str, unix_secs: i64) -> String {
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
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let month = MONTHS[(m - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:>2}")),
            Some('b') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hh + 11) % 12 + 1)),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpl(src: &str) -> ChatTemplate {
        ChatTemplate::new("test", "chat_template", src, "<s>".into(), "</s>".into()).unwrap()
    }

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml() {
        let t = tmpl(CHATML);
        let out = t.render(&[Message::new("user", "Hi")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t
            .render(
                &[Message::new("system", "S"), Message::new("user", "U")],
                false,
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        );
    }

    #[test]
    fn trim_and_lstrip_blocks_pycompat_and_specials() {
        let src = "{{ bos_token }}\n{% for m in messages %}\n  {% if m.role == 'user' %}\n[{{ m.content.strip() | upper }}]\n  {% endif %}\n{% endfor %}\n{{ eos_token }}";
        let out = tmpl(src)
            .render(&[Message::new("user", "  hi  ")], false)
            .unwrap();
        assert_eq!(out, "<s>\n[HI]\n</s>");
    }

    #[test]
    fn raise_exception_is_an_error_naming_file_and_key() {
        let t = tmpl("{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok");
        assert_eq!(t.render(&[Message::new("user", "x")], false).unwrap(), "ok");
        let e = t
            .render(&[Message::new("assistant", "x")], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test: chat_template:") && e.contains("first must be user"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_is_an_error() {
        let e = ChatTemplate::new(
            "f.gguf",
            KEY_CHAT_TEMPLATE,
            "{% for %}",
            String::new(),
            String::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f.gguf: tokenizer.chat_template:"), "{e}");
    }

    #[test]
    fn loop_controls_and_generation_tags() {
        let src = "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}{%- generation -%}{{ m.content }}{% endgeneration %}{% endfor %}";
        let out = tmpl(src)
            .render(
                &[Message::new("system", "s"), Message::new("user", "u")],
                false,
            )
            .unwrap();
        assert_eq!(out, "u");
    }

    #[test]
    fn tojson_is_python_style() {
        let out = tmpl("{{ messages[0] | tojson }}|{{ ['é', 1, none] | tojson }}")
            .render(&[Message::new("user", "a\"b<")], false)
            .unwrap();
        // minijinja maps are sorted by key (Python would keep role before content).
        assert_eq!(
            out,
            "{\"content\": \"a\\\"b<\", \"role\": \"user\"}|[\"é\", 1, null]"
        );
        let out = tmpl("{{ {'a': [1, 2]} | tojson(indent=2) }}")
            .render(&[], false)
            .unwrap();
        assert_eq!(out, "{\n  \"a\": [\n    1,\n    2\n  ]\n}");
    }

    #[test]
    fn strftime_formats() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = 1_722_000_000 - 1_722_000_000 % 86_400 + 13 * 3600 + 5 * 60 + 9;
        assert_eq!(
            strftime("%d %b %Y %A %H:%M:%S %j %%", t),
            "26 Jul 2024 Friday 13:05:09 208 %"
        );
        assert_eq!(strftime("%B %e %y %I%p", 0), "January  1 70 12AM");
    }
}
