//! CSV cells (RFC 4180) that a spreadsheet will not run: a cell starting
//! with `=`, `+`, `-`, `@`, a tab or a carriage return is prefixed with `'`
//! (OWASP's advice against formula injection).

/// One cell, quoted when needed, defused when it could start a formula.
pub fn cell(text: &str) -> String {
    let defused = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

/// One line of cells, ended by CRLF.
pub fn line<'a>(cells: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = cells.into_iter().map(cell).collect::<Vec<_>>().join(",");
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formulas_are_defused_and_quotes_doubled() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-1"), "'-1");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("1250"), "1250");
        assert_eq!(line(["a", "=b"]), "a,'=b\r\n");
    }

    proptest! {
        #[test]
        fn no_cell_starts_a_formula(s in "\\PC{0,40}") {
            let c = cell(&s);
            let inner = c.strip_prefix('"').unwrap_or(&c);
            prop_assert!(!inner.starts_with(['=', '+', '-', '@', '\t', '\r']));
        }
    }
}
