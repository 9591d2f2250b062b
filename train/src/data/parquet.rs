//! Parquet training data, as Hugging Face datasets publishes it: one document per row, in a
//! string column (`text` unless named otherwise), any compression the format defines
//! (snappy, zstd, gzip, lz4, brotli). Only that column is decoded (a projection), row group
//! by row group, so a shard is never held in memory as a whole.
use std::path::Path;

use parquet::basic::Type as PhysicalType;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;

use super::err;
use crate::error::Result;

/// Calls `f` with the text of each row's column `column`, in row order.
pub fn for_each_text(path: &Path, column: &str, f: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| err(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| err(path, format!("not a readable Parquet file: {e}")))?;
    let root = reader.metadata().file_metadata().schema();
    let fields = root.get_fields();
    let Some(field) = fields.iter().find(|t| t.name() == column) else {
        let names: Vec<&str> = fields.iter().map(|t| t.name()).collect();
        return Err(err(path, format!("no column `{column}` (the columns are {names:?}; name the text column with --text-field)")));
    };
    if !field.is_primitive() || field.get_physical_type() != PhysicalType::BYTE_ARRAY {
        let what = if field.is_primitive() { format!("{:?}", field.get_physical_type()) } else { "a nested group".to_string() };
        return Err(err(path, format!("column `{column}` is {what}, not a string column")));
    }
    if reader.metadata().file_metadata().num_rows() == 0 {
        return Err(err(path, "the file holds no rows"));
    }
    let projection = Type::group_type_builder(root.name())
        .with_fields(vec![field.clone()])
        .build()
        .map_err(|e| err(path, format!("column `{column}`: {e}")))?;
    let rows = reader.get_row_iter(Some(projection)).map_err(|e| err(path, format!("column `{column}`: {e}")))?;
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| err(path, format!("row {i} (from 0): {e}")))?;
        let value = row.get_column_iter().next().map(|(_, v)| v);
        match value {
            Some(Field::Str(s)) => f(s)?,
            Some(Field::Bytes(b)) => {
                let s = std::str::from_utf8(b.data()).map_err(|e| err(path, format!("row {i} (from 0): `{column}` is not UTF-8 ({e})")))?;
                f(s)?
            }
            Some(Field::Null) | None => {
                return Err(err(path, format!("row {i} (from 0): `{column}` is null (drop or fill such rows first)")));
            }
            Some(other) => return Err(err(path, format!("row {i} (from 0): `{column}` holds {other:?}, not a string"))),
        }
    }
    Ok(())
}
