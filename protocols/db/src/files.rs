//! Keeper's file clauses, shared by the MySQL and SQL Server consoles: `SELECT ... INTO LOCAL
//! OUTFILE 'name.csv'` (a download to the user) and `LOAD DATA LOCAL INFILE 'name.csv' INTO
//! TABLE t` (an upload from the user); CSV written as RFC 4180 with a header, and read back
//! with bounded memory.
//!
//! A file name the statement gives is only ever a name for the user's browser: its last path
//! component, without control characters. Nothing here touches a file system.

use std::sync::LazyLock;

use regex::Regex;

/// `(query) INTO LOCAL OUTFILE 'name' (options)`: the query, the name.
pub(crate) static OUTFILE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?is)^(.*?)\binto\s+local\s+outfile\s+'([^']*)'(.*?);?\s*$").ok()
});

/// `LOAD DATA LOCAL INFILE 'name' INTO TABLE t ...`: the name, and what follows `INTO TABLE`.
pub(crate) static INFILE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?is)^\s*load\s+data\s+(?:low_priority\s+|concurrent\s+)?local\s+infile\s+'([^']*)'(?:\s+(?:replace|ignore))?(?:\s+into\s+table\s+(.*?))?;?\s*$",
    )
    .ok()
});

/// The most bytes one CSV record may take when ztproxy reads it (a longer record ends the
/// import with an error rather than growing memory).
pub(crate) const MAX_RECORD: usize = 1 << 20;
/// The most fields one CSV record may have.
pub(crate) const MAX_FIELDS: usize = 1024;

/// The file's name for the user: the last path component, without control characters.
pub(crate) fn file_name(path: &str) -> String {
    let name: String = path
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(255)
        .collect();
    if name == "." || name == ".." {
        String::new()
    } else {
        name
    }
}

/// One CSV record (RFC 4180: quoted when it holds a comma, quote or line break; NULL empty).
pub(crate) fn csv_line<'a>(values: impl Iterator<Item = Option<&'a str>>) -> Vec<u8> {
    let mut line = Vec::new();
    for (i, value) in values.enumerate() {
        if i > 0 {
            line.push(b',');
        }
        let value = value.unwrap_or_default();
        if value.contains([',', '"', '\n', '\r']) {
            line.push(b'"');
            line.extend_from_slice(value.replace('"', "\"\"").as_bytes());
            line.push(b'"');
        } else {
            line.extend_from_slice(value.as_bytes());
        }
    }
    line.push(b'\n');
    line
}

/// Policy refused Keeper's clause in `sql` (`action`: `download` for an export, `upload`
/// for an import): the observer hears it, the user reads why, nothing is transferred.
pub(crate) async fn refuse(
    sql: &str,
    database: &str,
    action: &'static str,
    name: &str,
    out: &tokio::sync::mpsc::Sender<crate::console::Output>,
) -> crate::console::QueryReport {
    use crate::console::Output;
    let mut report = crate::console::QueryReport::new(sql, database);
    let what = if action == "download" {
        "export"
    } else {
        "import"
    };
    let _ = out
        .send(Output::Refused {
            action,
            name: name.to_owned(),
        })
        .await;
    let _ = out
        .send(Output::Bytes(
            format!("CSV {what} is not allowed for this session: nothing was transferred.\r\n")
                .into_bytes(),
        ))
        .await;
    report.error_code = Some("42000".to_owned());
    report
}

/// What follows `INTO TABLE` in a `LOAD DATA LOCAL INFILE`, for an engine that turns the file
/// into `INSERT`s (SQL Server): the table, the lines to skip, the columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadTarget {
    /// The table as the user wrote it.
    pub table: String,
    /// `IGNORE n LINES`.
    pub skip: u64,
    /// `(a, b, c)`, as written; empty for all the table's columns in order.
    pub columns: Vec<String>,
}

static LOAD_TARGET: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?is)^\s*((?:\[[^\]]*\]|[\w#@$.])+)(?:\s+(?:fields|columns)\s+.*?)??(?:\s+lines\s+terminated\s+by\s+'[^']*')?(?:\s+ignore\s+(\d{1,9})\s+(?:lines|rows))?\s*(?:\(([^()]*)\))?\s*$",
    )
    .ok()
});

/// Reads what follows `INTO TABLE`; `None` when it is not `table [FIELDS ...] [IGNORE n
/// LINES] [(columns)]`.
pub(crate) fn load_target(text: &str) -> Option<LoadTarget> {
    // The file is read as CSV (commas, double quotes, any line break): options saying
    // otherwise are refused rather than ignored.
    let lower = text.to_ascii_lowercase();
    if ["terminated by", "enclosed by", "escaped by", "starting by"]
        .iter()
        .any(|option| lower.contains(option))
    {
        return None;
    }
    let captures = LOAD_TARGET.as_ref()?.captures(text)?;
    let table = captures.get(1)?.as_str().to_owned();
    let skip = captures
        .get(2)
        .and_then(|m| m.as_str().parse().ok())
        .unwrap_or(0);
    let columns = captures
        .get(3)
        .map(|m| {
            m.as_str()
                .split(',')
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Some(LoadTarget {
        table,
        skip,
        columns,
    })
}

/// Why a CSV file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CsvError {
    /// A record is longer than [`MAX_RECORD`] or has more than [`MAX_FIELDS`] fields.
    #[error("record {0} is too long")]
    TooLong(u64),
    /// The file is not UTF-8.
    #[error("record {0} is not UTF-8 text")]
    NotText(u64),
    /// The file ended inside a quoted field.
    #[error("the file ends inside a quoted field")]
    Unterminated,
}

/// A field of a record: `None` for an empty unquoted field (NULL).
pub(crate) type Field = Option<String>;

/// An RFC 4180 reader fed in pieces: complete records come out, the incomplete end waits for
/// the next piece. Memory is bounded by [`MAX_RECORD`].
#[derive(Debug, Default)]
pub(crate) struct CsvReader {
    pending: Vec<u8>,
    records: u64,
}

impl CsvReader {
    /// Adds `data` and returns the records it completed.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<Vec<Vec<Field>>, CsvError> {
        self.pending.extend_from_slice(data);
        let mut records = Vec::new();
        let mut start = 0;
        while let Some((record, used)) = record(&mut self.records, &self.pending[start..], false)? {
            records.push(record);
            start += used;
        }
        self.pending.drain(..start);
        if self.pending.len() > MAX_RECORD {
            return Err(CsvError::TooLong(self.records + 1));
        }
        Ok(records)
    }

    /// The file is complete: its last record, when it has no line break.
    pub(crate) fn finish(&mut self) -> Result<Option<Vec<Field>>, CsvError> {
        let pending = std::mem::take(&mut self.pending);
        if pending.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return Ok(None);
        }
        match record(&mut self.records, &pending, true)? {
            Some((record, _)) => Ok(Some(record)),
            None => Err(CsvError::Unterminated),
        }
    }
}

/// The first record of `data` and the bytes it used, when `data` holds all of it (or, when
/// `last`, whatever `data` holds); `records` counts the records read.
fn record(
    records: &mut u64,
    data: &[u8],
    last: bool,
) -> Result<Option<(Vec<Field>, usize)>, CsvError> {
    let mut fields = Vec::new();
    let mut field = Vec::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut i = 0;
    let number = *records + 1;
    let mut push = |field: &mut Vec<u8>, quoted: bool| -> Result<(), CsvError> {
        if fields.len() >= MAX_FIELDS {
            return Err(CsvError::TooLong(number));
        }
        let text =
            String::from_utf8(std::mem::take(field)).map_err(|_| CsvError::NotText(number))?;
        fields.push(if text.is_empty() && !quoted {
            None
        } else {
            Some(text)
        });
        Ok(())
    };
    while i < data.len() {
        let byte = data[i];
        if in_quotes {
            if byte == b'"' {
                match data.get(i + 1) {
                    Some(b'"') => {
                        field.push(b'"');
                        i += 1;
                    }
                    None if !last => return Ok(None),
                    _ => in_quotes = false,
                }
            } else {
                field.push(byte);
            }
        } else {
            match byte {
                b'"' if field.is_empty() && !quoted => {
                    quoted = true;
                    in_quotes = true;
                }
                b',' => {
                    push(&mut field, quoted)?;
                    quoted = false;
                }
                b'\n' | b'\r' => {
                    let mut used = i + 1;
                    if byte == b'\r' {
                        match data.get(used) {
                            Some(b'\n') => used += 1,
                            None if !last => return Ok(None),
                            _ => {}
                        }
                    }
                    push(&mut field, quoted)?;
                    *records += 1;
                    return Ok(Some((fields, used)));
                }
                _ => field.push(byte),
            }
        }
        i += 1;
    }
    if last && !in_quotes {
        push(&mut field, quoted)?;
        *records += 1;
        return Ok(Some((fields, data.len())));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepers_file_clauses_are_recognised() {
        let outfile = OUTFILE.as_ref().unwrap();
        let c = outfile
            .captures("SELECT * FROM t INTO LOCAL OUTFILE '/tmp/a b.csv' FIELDS TERMINATED BY ',';")
            .unwrap();
        assert_eq!(&c[1], "SELECT * FROM t ");
        assert_eq!(file_name(&c[2]), "a b.csv");
        let infile = INFILE.as_ref().unwrap();
        let c = infile
            .captures("load data local infile 'x/../in.csv' into table t fields terminated by ','")
            .unwrap();
        assert_eq!(file_name(&c[1]), "in.csv");
        assert_eq!(&c[2], "t fields terminated by ','");
        assert!(
            infile
                .captures("load data infile '/etc/passwd' into table t")
                .is_none()
        );
        assert_eq!(file_name(".."), "");
    }

    #[test]
    fn load_targets_name_the_table_lines_to_skip_and_columns() {
        assert_eq!(
            load_target("dbo.people IGNORE 1 LINES (id, name)"),
            Some(LoadTarget {
                table: "dbo.people".into(),
                skip: 1,
                columns: vec!["id".into(), "name".into()],
            })
        );
        let t = load_target("[my table]").unwrap();
        assert_eq!((t.table.as_str(), t.skip), ("[my table]", 0));
        assert_eq!(load_target("t fields terminated by ';'"), None);
        assert_eq!(load_target("t; drop table x"), None);
    }

    #[test]
    fn csv_lines_quote_what_needs_it() {
        assert_eq!(
            csv_line([Some("1"), None, Some("a,\"b\"")].into_iter()),
            b"1,,\"a,\"\"b\"\"\"\n"
        );
    }

    #[test]
    fn csv_records_come_whole_whatever_the_pieces() {
        let file = "id,name\r\n1,\"a,\"\"b\"\"\nc\"\n2,\n3,\"\"";
        for split in 1..file.len() {
            let mut reader = CsvReader::default();
            let mut records = reader.feed(&file.as_bytes()[..split]).unwrap();
            records.extend(reader.feed(&file.as_bytes()[split..]).unwrap());
            records.extend(reader.finish().unwrap());
            assert_eq!(
                records,
                vec![
                    vec![Some("id".into()), Some("name".into())],
                    vec![Some("1".into()), Some("a,\"b\"\nc".into())],
                    vec![Some("2".into()), None],
                    vec![Some("3".into()), Some(String::new())],
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn csv_records_are_bounded() {
        let mut reader = CsvReader::default();
        let long = vec![b'x'; MAX_RECORD + 1];
        assert_eq!(reader.feed(&long), Err(CsvError::TooLong(1)));
        let mut reader = CsvReader::default();
        assert_eq!(reader.feed(b"\"open"), Ok(vec![]));
        assert_eq!(reader.finish(), Err(CsvError::Unterminated));
        let mut reader = CsvReader::default();
        assert_eq!(reader.feed(b"\xff\n"), Err(CsvError::NotText(1)));
    }
}
