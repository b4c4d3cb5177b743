//! The dialects posnet ships. Each is a table of [`FieldSpec`]s; the codec
//! has no dialect-specific code.

use crate::spec::Dialect;

mod cup;
mod iso87ascii;

pub use cup::CUP;
pub use iso87ascii::ISO87ASCII;

/// Every shipped dialect, for lookup by name.
pub const ALL: [&Dialect; 2] = [&CUP, &ISO87ASCII];

/// Finds a shipped dialect by its name (`cup`, `iso87ascii`).
pub fn by_name(name: &str) -> Option<&'static Dialect> {
    ALL.into_iter().find(|d| d.name == name)
}
