//! The CUDA templates of `kernels-templates/`, embedded at build time (one family per file,
//! plus shared snippets), and their rendering with minijinja. Rendering is pure string work:
//! it needs no CUDA at all, so snapshot tests of generated source run everywhere.
use minijinja::{Environment, UndefinedBehavior};
use sha2::{Digest, Sha256};

use crate::error::{CodegenError, Result};

/// (file name, text) of every template; the file name is the template's name.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("common.cuh.j2", include_str!("../../kernels-templates/common.cuh.j2")),
    ("gdn_rows.cuh.j2", include_str!("../../kernels-templates/gdn_rows.cuh.j2")),
    ("jet_decode.cu.j2", include_str!("../../kernels-templates/jet_decode.cu.j2")),
    ("gdn_chunk_prep.cu.j2", include_str!("../../kernels-templates/gdn_chunk_prep.cu.j2")),
    ("gdn_chunk_state.cu.j2", include_str!("../../kernels-templates/gdn_chunk_state.cu.j2")),
    ("dynconv_prefill.cu.j2", include_str!("../../kernels-templates/dynconv_prefill.cu.j2")),
    ("rownorm.cu.j2", include_str!("../../kernels-templates/rownorm.cu.j2")),
    ("elementwise.cu.j2", include_str!("../../kernels-templates/elementwise.cu.j2")),
];

fn text(name: &str) -> Result<&'static str> {
    TEMPLATES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| CodegenError::Template { template: name.into(), msg: "no such template".into() })
}

/// SHA-256 (hex) of a family template together with the snippets every family includes: the
/// tuning database keys on it, so editing a template invalidates its tuned entries.
pub fn template_hash(family_template: &str) -> Result<String> {
    let mut h = Sha256::new();
    for name in [family_template, "common.cuh.j2", "gdn_rows.cuh.j2"] {
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update(text(name)?.as_bytes());
        h.update([0u8]);
    }
    Ok(hex(&h.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_keep_trailing_newline(true);
    env
}

fn render_one(name: &str, ctx: &serde_json::Value) -> Result<String> {
    let mut e = env();
    let err = |e: minijinja::Error| CodegenError::Template { template: name.into(), msg: format!("{e:#}") };
    e.add_template(name, text(name)?).map_err(err)?;
    let t = e.get_template(name).map_err(err)?;
    t.render(minijinja::Value::from_serialize(ctx)).map_err(err)
}

/// Renders family template `name` with `ctx`; the snippets are rendered with the same
/// context first and passed in as `common` and `rows`.
pub fn render(name: &str, ctx: &serde_json::Value) -> Result<String> {
    let mut full = ctx.clone();
    let common = render_one("common.cuh.j2", ctx)?;
    let rows = render_one("gdn_rows.cuh.j2", ctx)?;
    if let Some(map) = full.as_object_mut() {
        map.insert("common".into(), serde_json::Value::String(common));
        map.insert("rows".into(), serde_json::Value::String(rows));
    } else {
        return Err(CodegenError::Template { template: name.into(), msg: "context must be a map".into() });
    }
    render_one(name, &full)
}
