//! Results as `psql` draws them: an aligned table (or `\x`'s expanded records), NULL shown as
//! such, and the row count — streamed, so a result of any size costs bounded memory.
//!
//! The columns' widths come from the first [`LAYOUT_ROWS`] rows (or [`LAYOUT_BYTES`] of
//! them); later rows are written as they arrive with those widths (a wider value widens its
//! own row only). Values are made safe for the terminal: control characters (a value could
//! hold escape sequences that rewrite the screen) are shown as `\n`, `\t`, `\x1b`, and a
//! value is cut at [`MAX_CELL`] characters.

use unicode_width::UnicodeWidthChar;

/// Rows read before the columns' widths are fixed.
pub const LAYOUT_ROWS: usize = 1000;
/// Bytes of rows read before the columns' widths are fixed.
pub const LAYOUT_BYTES: usize = 1 << 20;
/// The most characters of one value shown.
pub const MAX_CELL: usize = 1000;
/// How NULL is shown.
pub const NULL: &str = "NULL";

/// A value as shown: control characters made visible, cut at [`MAX_CELL`]; and its width in
/// terminal columns.
pub fn display(value: &str) -> (String, usize) {
    let mut shown = String::with_capacity(value.len().min(MAX_CELL * 4));
    let mut width = 0;
    for (count, c) in value.chars().enumerate() {
        if count == MAX_CELL {
            shown.push('…');
            width += 1;
            break;
        }
        let escape = match c {
            '\n' => "\\n".to_owned(),
            '\r' => "\\r".to_owned(),
            '\t' => "\\t".to_owned(),
            c if c.is_control() => format!("\\x{:02x}", u32::from(c)),
            c => {
                shown.push(c);
                width += c.width().unwrap_or(0);
                continue;
            }
        };
        // Escapes are ASCII: as wide as they are long.
        width += escape.len();
        shown.push_str(&escape);
    }
    (shown, width)
}

type Row = Vec<Option<(String, usize)>>;

/// How a table is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// psql's: ` a | b`, a rule under the header, `(n rows)`.
    Psql,
    /// The mysql client's: boxed in `+---+`, `n rows in set`.
    Boxed,
}

/// One result being written. See the module docs.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(String, usize)>,
    expanded: bool,
    style: Style,
    buffered: Vec<Row>,
    buffered_bytes: usize,
    widths: Option<Vec<usize>>,
    right: Vec<bool>,
    rows: u64,
}

impl Table {
    /// A result with these column names; `expanded` writes records (`\x`).
    pub fn new(columns: &[String], expanded: bool) -> Self {
        Self::styled(columns, expanded, Style::Psql)
    }

    /// A result drawn in `style`.
    pub fn styled(columns: &[String], expanded: bool, style: Style) -> Self {
        Self {
            columns: columns.iter().map(|c| display(c)).collect(),
            expanded,
            style,
            buffered: Vec::new(),
            buffered_bytes: 0,
            widths: None,
            right: vec![true; columns.len()],
            rows: 0,
        }
    }

    /// Rows so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Takes a row (`None` is NULL); writes what can be written to `out`.
    pub fn row(&mut self, values: &[Option<&str>], out: &mut Vec<u8>) {
        self.rows += 1;
        let row: Row = (0..self.columns.len())
            .map(|i| values.get(i).copied().flatten().map(display))
            .collect();
        if self.expanded {
            self.record(&row, out);
            return;
        }
        if self.widths.is_some() {
            self.write_row(&row, out);
            return;
        }
        self.buffered_bytes += row
            .iter()
            .flatten()
            .map(|(s, _)| s.len() + 8)
            .sum::<usize>();
        self.buffered.push(row);
        if self.buffered.len() >= LAYOUT_ROWS || self.buffered_bytes >= LAYOUT_BYTES {
            self.layout(out);
        }
    }

    /// Writes what is left and the row count.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        // mysql says "Empty set" without a table.
        let empty_box = self.style == Style::Boxed && self.rows == 0;
        if !self.expanded && self.widths.is_none() && !empty_box {
            self.layout(out);
        }
        let s = if self.rows == 1 { "" } else { "s" };
        match self.style {
            Style::Boxed => {
                if !self.expanded
                    && let Some(widths) = &self.widths
                {
                    push_line(out, &border(widths));
                }
                if self.rows == 0 {
                    out.extend_from_slice(b"Empty set\r\n");
                } else {
                    out.extend_from_slice(format!("{} row{s} in set\r\n", self.rows).as_bytes());
                }
            }
            Style::Psql if self.expanded && self.rows == 0 => {
                out.extend_from_slice(b"(0 rows)\r\n");
            }
            Style::Psql if !self.expanded => {
                out.extend_from_slice(format!("({} row{s})\r\n", self.rows).as_bytes());
            }
            Style::Psql => {}
        }
        out.extend_from_slice(b"\r\n");
    }

    fn layout(&mut self, out: &mut Vec<u8>) {
        let mut widths: Vec<usize> = self.columns.iter().map(|(_, w)| *w).collect();
        for row in &self.buffered {
            for (i, cell) in row.iter().enumerate() {
                let width = cell.as_ref().map_or(NULL.len(), |(_, w)| *w);
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(width);
                }
                // Numbers are right-aligned, as psql aligns numeric types.
                if let (Some(right), Some((text, _))) = (self.right.get_mut(i), cell) {
                    *right &= looks_numeric(text);
                }
            }
        }
        if self.buffered.is_empty() {
            self.right.iter_mut().for_each(|r| *r = false);
        }
        if self.style == Style::Boxed {
            push_line(out, &border(&widths));
            let mut line = String::from("|");
            for ((name, width), column) in self.columns.iter().zip(&widths) {
                line.push(' ');
                line.push_str(name);
                line.extend(std::iter::repeat_n(' ', column.saturating_sub(*width)));
                line.push_str(" |");
            }
            push_line(out, &line);
            push_line(out, &border(&widths));
            self.widths = Some(widths);
            for row in std::mem::take(&mut self.buffered) {
                self.write_row(&row, out);
            }
            self.buffered_bytes = 0;
            return;
        }
        // The header, centred as psql centres it.
        let mut line = String::new();
        for (i, ((name, width), column)) in self.columns.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push('|');
            }
            let space = column.saturating_sub(*width);
            let left = space / 2;
            line.push(' ');
            line.extend(std::iter::repeat_n(' ', left));
            line.push_str(name);
            line.extend(std::iter::repeat_n(' ', space - left));
            line.push(' ');
        }
        push_line(out, line.trim_end());
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
        push_line(out, &rule.join("+"));
        self.widths = Some(widths);
        for row in std::mem::take(&mut self.buffered) {
            self.write_row(&row, out);
        }
        self.buffered_bytes = 0;
    }

    fn write_row(&self, row: &Row, out: &mut Vec<u8>) {
        let Some(widths) = &self.widths else { return };
        let boxed = self.style == Style::Boxed;
        let mut line = String::new();
        if boxed {
            line.push('|');
        }
        for (i, cell) in row.iter().enumerate() {
            if i > 0 && !boxed {
                line.push('|');
            }
            let (text, width) = match cell {
                Some((text, width)) => (text.as_str(), *width),
                None => (NULL, NULL.len()),
            };
            let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(width);
            line.push(' ');
            if self.right.get(i).copied().unwrap_or(false) {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(text);
            } else {
                line.push_str(text);
                line.extend(std::iter::repeat_n(' ', pad));
            }
            line.push(' ');
            if boxed {
                line.push('|');
            }
        }
        push_line(out, line.trim_end());
    }

    fn record(&self, row: &Row, out: &mut Vec<u8>) {
        let name_width = self.columns.iter().map(|(_, w)| *w).max().unwrap_or(0);
        push_line(
            out,
            &format!("-[ RECORD {} ]-{}", self.rows, "-".repeat(name_width)),
        );
        for ((name, width), cell) in self.columns.iter().zip(row) {
            let value = cell.as_ref().map_or(NULL, |(text, _)| text.as_str());
            let pad = " ".repeat(name_width.saturating_sub(*width));
            push_line(out, format!("{name}{pad} | {value}").trim_end());
        }
    }
}

/// `+----+------+` for columns of `widths`.
fn border(widths: &[usize]) -> String {
    let mut line = String::from("+");
    for width in widths {
        line.push_str(&"-".repeat(width + 2));
        line.push('+');
    }
    line
}

fn push_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn looks_numeric(text: &str) -> bool {
    let t = text.strip_prefix('-').unwrap_or(text);
    !t.is_empty()
        && t.chars().next().is_some_and(|c| c.is_ascii_digit())
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &[u8]) -> String {
        String::from_utf8(out.to_vec())
            .unwrap()
            .replace("\r\n", "\n")
    }

    #[test]
    fn a_table_is_aligned_numbers_right_null_shown() {
        let mut out = Vec::new();
        let mut t = Table::new(&["id".into(), "name".into()], false);
        t.row(&[Some("1"), Some("alice")], &mut out);
        t.row(&[Some("10"), None], &mut out);
        assert!(out.is_empty(), "widths wait for more rows");
        t.finish(&mut out);
        assert_eq!(
            text(&out),
            " id | name\n----+-------\n  1 | alice\n 10 | NULL\n(2 rows)\n\n"
        );
    }

    #[test]
    fn a_boxed_table_is_the_mysql_clients() {
        let mut out = Vec::new();
        let mut t = Table::styled(&["id".into(), "name".into()], false, Style::Boxed);
        t.row(&[Some("1"), Some("apple")], &mut out);
        t.row(&[Some("10"), None], &mut out);
        t.finish(&mut out);
        assert_eq!(
            text(&out),
            "+----+-------+\n| id | name  |\n+----+-------+\n|  1 | apple |\n| 10 | NULL  |\n+----+-------+\n2 rows in set\n\n"
        );
        let mut out = Vec::new();
        Table::styled(&["id".into()], false, Style::Boxed).finish(&mut out);
        assert_eq!(text(&out), "Empty set\n\n");
    }

    #[test]
    fn expanded_records_and_hostile_values() {
        let mut out = Vec::new();
        let mut t = Table::new(&["k".into(), "value".into()], true);
        t.row(&[Some("a"), Some("x\x1b[2Jy\nz")], &mut out);
        t.finish(&mut out);
        assert_eq!(
            text(&out),
            "-[ RECORD 1 ]------\nk     | a\nvalue | x\\x1b[2Jy\\nz\n\n"
        );
        let (shown, width) = display(&"é".repeat(5000));
        assert_eq!(shown.chars().count(), MAX_CELL + 1);
        assert_eq!(width, MAX_CELL + 1);
        assert_eq!(display("日本").1, 4);
    }

    #[test]
    fn a_long_result_streams_after_the_layout_rows() {
        let mut out = Vec::new();
        let mut t = Table::new(&["n".into()], false);
        for n in 0..LAYOUT_ROWS + 5 {
            t.row(&[Some(&n.to_string())], &mut out);
        }
        assert!(t.buffered.is_empty());
        let before = out.len();
        t.row(&[Some("123456789012")], &mut out);
        // Written at once, wider than its column.
        assert!(out.len() > before);
        assert!(text(&out).ends_with(" 123456789012\n"));
    }
}
