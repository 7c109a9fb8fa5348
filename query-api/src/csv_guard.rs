//! CSV exports made safe to open in a spreadsheet: a text cell beginning
//! with `=`, `+`, `-`, `@`, a tab or a carriage return would be read as a
//! formula (CSV injection), so it gets a leading `'`, as OWASP advises.
//!
//! Only text cells are touched, which in ClickHouse's CSV are exactly the
//! quoted ones (strings, dates, arrays); numbers are written unquoted and
//! pass unchanged, so a negative score stays a number. The guard reads
//! ClickHouse's chunks as they come, with its place in the CSV carried
//! from one chunk to the next, so a cell split across chunks is handled.

use axum::body::Bytes;
use futures::{Stream, StreamExt};

/// The first characters of a cell that a spreadsheet takes for a formula.
const FORMULA_START: &[u8] = b"=+-@\t\r";

/// Where the reader is in the CSV text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Place {
    /// At the start of a cell.
    #[default]
    CellStart,
    /// Just after a text cell's opening quote.
    TextStart,
    /// Inside a text cell.
    Text,
    /// Inside a text cell, after a quote: an escaped quote or the end.
    TextQuote,
    /// Inside an unquoted (numeric) cell.
    Bare,
}

#[derive(Debug, Default)]
pub struct CsvGuard {
    place: Place,
}

impl CsvGuard {
    /// `chunk`, with `'` inserted at the start of each text cell that
    /// begins like a formula.
    pub fn guard(&mut self, chunk: Bytes) -> Bytes {
        let mut out: Option<Vec<u8>> = None;
        for (i, &b) in chunk.iter().enumerate() {
            if self.place == Place::TextStart && FORMULA_START.contains(&b) {
                // Copied only once a cell needs it: most chunks pass as they are.
                let out = out.get_or_insert_with(|| {
                    let mut v = Vec::with_capacity(chunk.len() + 16);
                    v.extend_from_slice(&chunk[..i]);
                    v
                });
                out.push(b'\'');
            }
            if let Some(out) = out.as_mut() {
                out.push(b);
            }
            self.place = match (self.place, b) {
                (Place::CellStart, b'"') => Place::TextStart,
                (Place::CellStart, b',' | b'\n') => Place::CellStart,
                (Place::CellStart, _) => Place::Bare,
                (Place::TextStart | Place::Text, b'"') => Place::TextQuote,
                (Place::TextStart | Place::Text, _) => Place::Text,
                (Place::TextQuote, b'"') => Place::Text,
                (Place::TextQuote | Place::Bare, b',' | b'\n') => Place::CellStart,
                (Place::TextQuote | Place::Bare, _) => Place::Bare,
            };
        }
        out.map_or(chunk, Bytes::from)
    }
}

/// A CSV byte stream with its text cells guarded.
pub fn guarded<S, E>(csv: S) -> impl Stream<Item = Result<Bytes, E>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let mut guard = CsvGuard::default();
    csv.map(move |chunk| chunk.map(|c| guard.guard(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard_split(csv: &str, split: usize) -> String {
        let mut g = CsvGuard::default();
        let bytes = Bytes::copy_from_slice(csv.as_bytes());
        let mut out = g.guard(bytes.slice(..split)).to_vec();
        out.extend_from_slice(&g.guard(bytes.slice(split..)));
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn formula_like_text_cells_are_neutralised_and_numbers_are_not() {
        let cases = [
            (
                "\"=HYPERLINK(\"\"x\"\")\"\n",
                "\"'=HYPERLINK(\"\"x\"\")\"\n",
            ),
            (
                "\"+1\",\"-cmd\",\"@SUM(A1)\"\n",
                "\"'+1\",\"'-cmd\",\"'@SUM(A1)\"\n",
            ),
            ("\"\tx\",\"\rx\"\n", "\"'\tx\",\"'\rx\"\n"),
            // Negative numbers are unquoted: left as they are.
            ("\"d1\",-1.5,-3,\"ok\"\n", "\"d1\",-1.5,-3,\"ok\"\n"),
            // Only a cell's first character counts; quotes inside and empty cells pass.
            (
                "\"a=b\",\"\",\"\"\"=x\",\"x,-y\"\n",
                "\"a=b\",\"\",\"\"\"=x\",\"x,-y\"\n",
            ),
            // A cell after a line break inside text is not a new cell.
            ("\"a\n=b\",\"=c\"\n", "\"a\n=b\",\"'=c\"\n"),
            (
                "\"tenant_id\",\"score\"\n\"acme\",0.5\n",
                "\"tenant_id\",\"score\"\n\"acme\",0.5\n",
            ),
        ];
        for (csv, want) in cases {
            for split in 0..=csv.len() {
                assert_eq!(guard_split(csv, split), want, "{csv:?} split at {split}");
            }
        }
    }

    #[test]
    fn chunks_without_formulas_are_passed_on_uncopied() {
        let chunk = Bytes::from_static(b"\"acme\",-1\n");
        let out = CsvGuard::default().guard(chunk.clone());
        assert_eq!(out.as_ptr(), chunk.as_ptr());
    }
}
