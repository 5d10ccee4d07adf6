//! Result rows printed as the `sqlite3` shell (3.40) prints them, mode by
//! mode, so a `sqlite3` user's scripts and habits carry over; plus `jsonl`,
//! one valid JSON object per row, for programs.
//!
//! Values are shown the way `sqlite3` shows them: through their text form
//! (`sqlite3_column_text`: text and blobs up to the first NUL, reals as
//! SQLite converts them), except where a mode says otherwise (`quote` and
//! `json` print blobs whole, reals with 20 significant digits).

use std::io::{self, Write};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row, Statement};

/// How result rows are printed (`.mode`, or `--csv`, `--box`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Values separated by "|" (the default)
    List,
    /// Comma-separated values (RFC 4180 quoting, CRLF line ends)
    Csv,
    /// Tab-separated values
    Tabs,
    /// One value per line: `name = value`
    Line,
    /// Columns aligned in plain text
    Column,
    /// Tables drawn with Unicode box characters
    Box,
    /// Tables drawn with ASCII characters
    Table,
    /// Markdown tables
    Markdown,
    /// Values as SQL literals
    Quote,
    /// A JSON array per statement, as sqlite3 writes it
    Json,
    /// One JSON object per row (valid JSON: blobs as hex, infinities as strings)
    Jsonl,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::List => "list",
            Mode::Csv => "csv",
            Mode::Tabs => "tabs",
            Mode::Line => "line",
            Mode::Column => "column",
            Mode::Box => "box",
            Mode::Table => "table",
            Mode::Markdown => "markdown",
            Mode::Quote => "quote",
            Mode::Json => "json",
            Mode::Jsonl => "jsonl",
        }
    }

    pub const ALL: [Mode; 11] = [
        Mode::List,
        Mode::Csv,
        Mode::Tabs,
        Mode::Line,
        Mode::Column,
        Mode::Box,
        Mode::Table,
        Mode::Markdown,
        Mode::Quote,
        Mode::Json,
        Mode::Jsonl,
    ];

    pub fn parse(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }

    fn columnar(self) -> bool {
        matches!(
            self,
            Mode::Column | Mode::Box | Mode::Table | Mode::Markdown
        )
    }
}

/// What the shell's settings say about printing.
#[derive(Debug, Clone)]
pub struct Format {
    pub mode: Mode,
    /// `.headers on|off`; column mode turns it on unless it was set.
    pub headers: bool,
    pub headers_set: bool,
    /// How NULL prints (`.nullvalue`).
    pub null_value: String,
    /// Between columns and after rows in list mode (`.separator`).
    pub column_separator: String,
    pub row_separator: String,
    /// Columnar modes wrap values to this many characters (0: never).
    pub wrap: usize,
    /// Columnar modes break wrapped lines at word boundaries.
    pub word_wrap: bool,
}

impl Default for Format {
    fn default() -> Self {
        Format {
            mode: Mode::List,
            headers: false,
            headers_set: false,
            null_value: String::new(),
            column_separator: "|".into(),
            row_separator: "\n".into(),
            wrap: 60,
            word_wrap: false,
        }
    }
}

impl Format {
    /// Switch modes as `.mode` does: each mode brings its separators, and
    /// column mode shows headers unless they were set explicitly.
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        let (column, row) = match mode {
            Mode::Csv => (",", "\r\n"),
            Mode::Tabs => ("\t", "\n"),
            Mode::Quote => (",", "\n"),
            _ => ("|", "\n"),
        };
        self.column_separator = column.into();
        self.row_separator = row.into();
        if mode == Mode::Column && !self.headers_set {
            self.headers = true;
        }
        if mode.columnar() {
            self.wrap = 60;
            self.word_wrap = false;
        }
    }

    pub fn set_headers(&mut self, on: bool) {
        self.headers = on;
        self.headers_set = true;
    }

    /// What `.mode` with no argument reports.
    pub fn describe(&self) -> String {
        if self.mode.columnar() {
            format!(
                "{} --wrap {} --wordwrap {} --noquote",
                self.mode.name(),
                self.wrap,
                if self.word_wrap { "on" } else { "off" }
            )
        } else if self.mode == Mode::Tabs {
            // sqlite3's tabs mode is list mode with a tab separator.
            Mode::List.name().to_string()
        } else {
            self.mode.name().to_string()
        }
    }
}

/// Prints the rows of statements in a [`Format`]. Columnar modes hold a
/// statement's rows until its last (as `sqlite3` does: widths depend on
/// every row).
pub struct Printer {
    reals: RealFormatter,
}

impl Printer {
    pub fn new() -> Self {
        Printer {
            reals: RealFormatter::default(),
        }
    }

    /// Print every row `next` yields (rows of one statement with these
    /// `columns`). Errors from `next` are the statement's; they pass
    /// through `E`.
    pub fn statement<E>(
        &mut self,
        format: &Format,
        columns: &[String],
        out: &mut dyn Write,
        mut next: impl FnMut() -> Result<Option<Values>, E>,
    ) -> Result<(), E>
    where
        E: From<io::Error>,
    {
        if columns.is_empty() {
            // Not a query: still step it to completion.
            while next()?.is_some() {}
            return Ok(());
        }
        if format.mode.columnar() {
            let mut rows = Vec::new();
            while let Some(values) = next()? {
                let cells = values
                    .0
                    .iter()
                    .map(|v| self.text(v))
                    .collect::<io::Result<Vec<_>>>()?;
                rows.push(cells);
            }
            if !rows.is_empty() {
                columnar(format, columns, &rows, out)?;
            }
            return Ok(());
        }
        let mut count = 0usize;
        while let Some(values) = next()? {
            if count == 0 {
                self.header(format, columns, out)?;
            }
            self.row(format, columns, &values, count, out)?;
            count += 1;
        }
        if count > 0 && format.mode == Mode::Json {
            out.write_all(b"]\n")?;
        }
        Ok(())
    }

    fn header(&mut self, f: &Format, columns: &[String], out: &mut dyn Write) -> io::Result<()> {
        if !f.headers {
            return Ok(());
        }
        let names: Vec<Vec<u8>> = match f.mode {
            Mode::List | Mode::Tabs => columns.iter().map(|c| c.as_bytes().to_vec()).collect(),
            Mode::Csv => columns
                .iter()
                .map(|c| csv_field(c.as_bytes(), &f.column_separator))
                .collect(),
            Mode::Quote => {
                let names: Vec<Vec<u8>> =
                    columns.iter().map(|c| sql_string(c.as_bytes())).collect();
                return write_joined(out, &names, ",", "\n");
            }
            _ => return Ok(()),
        };
        write_joined(out, &names, &f.column_separator, &f.row_separator)
    }

    fn row(
        &mut self,
        f: &Format,
        columns: &[String],
        values: &Values,
        index: usize,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let null = f.null_value.as_bytes();
        match f.mode {
            Mode::List | Mode::Tabs => {
                let cells = values
                    .0
                    .iter()
                    .map(|v| Ok(self.text(v)?.unwrap_or_else(|| null.to_vec())))
                    .collect::<io::Result<Vec<_>>>()?;
                write_joined(out, &cells, &f.column_separator, &f.row_separator)?;
            }
            Mode::Csv => {
                let cells = values
                    .0
                    .iter()
                    .map(|v| {
                        Ok(match self.text(v)? {
                            None => null.to_vec(),
                            Some(t) => csv_field(&t, &f.column_separator),
                        })
                    })
                    .collect::<io::Result<Vec<_>>>()?;
                write_joined(out, &cells, &f.column_separator, &f.row_separator)?;
            }
            Mode::Quote => {
                let cells = values
                    .0
                    .iter()
                    .map(|v| self.sql_literal(v, false))
                    .collect::<io::Result<Vec<_>>>()?;
                // Quote mode keeps its commas whatever `.separator` says.
                write_joined(out, &cells, ",", "\n")?;
            }
            Mode::Line => {
                let width = columns.iter().map(|c| c.len()).max().unwrap_or(0).max(5);
                if index > 0 {
                    out.write_all(f.row_separator.as_bytes())?;
                }
                for (name, v) in columns.iter().zip(&values.0) {
                    write!(out, "{name:>width$} = ")?;
                    out.write_all(&self.text(v)?.unwrap_or_else(|| null.to_vec()))?;
                    out.write_all(f.row_separator.as_bytes())?;
                }
            }
            Mode::Json => {
                out.write_all(if index == 0 { b"[{" } else { b",\n{" })?;
                for (i, (name, v)) in columns.iter().zip(&values.0).enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    out.write_all(&json_string(name.as_bytes()))?;
                    out.write_all(b":")?;
                    let value = match v {
                        Value::Null => b"null".to_vec(),
                        Value::Integer(i) => i.to_string().into_bytes(),
                        Value::Real(r) => self.reals.precise(*r, true)?.into_bytes(),
                        Value::Text(t) => json_string(until_nul(t)),
                        Value::Blob(b) => json_string(b),
                    };
                    out.write_all(&value)?;
                }
                out.write_all(b"}")?;
            }
            Mode::Jsonl => {
                // Written key by key: keys keep column order.
                out.write_all(b"{")?;
                for (i, (name, v)) in columns.iter().zip(&values.0).enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    serde_json::to_writer(&mut *out, name).map_err(io::Error::from)?;
                    out.write_all(b":")?;
                    serde_json::to_writer(&mut *out, &self.json_value(v)?)
                        .map_err(io::Error::from)?;
                }
                out.write_all(b"}\n")?;
            }
            Mode::Column | Mode::Box | Mode::Table | Mode::Markdown => {
                debug_assert!(false, "columnar modes print in `statement`");
            }
        }
        Ok(())
    }

    /// A value's text form (`sqlite3_column_text`), `None` for NULL.
    fn text(&mut self, v: &Value) -> io::Result<Option<Vec<u8>>> {
        Ok(match v {
            Value::Null => None,
            Value::Integer(i) => Some(i.to_string().into_bytes()),
            Value::Real(r) => Some(self.reals.text(*r)?.into_bytes()),
            Value::Text(t) | Value::Blob(t) => Some(until_nul(t).to_vec()),
        })
    }

    /// A value as the SQL literal `sqlite3`'s quote mode and `.dump` write.
    /// `dump` writes infinities as `1e999` (which reads back as infinity).
    pub fn sql_literal(&mut self, v: &Value, dump: bool) -> io::Result<Vec<u8>> {
        Ok(match v {
            Value::Null => b"NULL".to_vec(),
            Value::Integer(i) => i.to_string().into_bytes(),
            Value::Real(r) => self.reals.precise(*r, dump)?.into_bytes(),
            Value::Text(t) if dump => dump_string(until_nul(t)),
            Value::Text(t) => sql_string(until_nul(t)),
            Value::Blob(b) => {
                let mut s = b"X'".to_vec();
                s.extend(hex(b).into_bytes());
                s.push(b'\'');
                s
            }
        })
    }

    fn json_value(&mut self, v: &Value) -> io::Result<serde_json::Value> {
        use serde_json::Value as J;
        Ok(match v {
            Value::Null => J::Null,
            Value::Integer(i) => J::from(*i),
            Value::Real(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => J::Number(n),
                None => J::String(self.reals.text(*f)?),
            },
            Value::Text(t) => J::String(String::from_utf8_lossy(t).into_owned()),
            Value::Blob(b) => J::String(hex(b)),
        })
    }
}

/// One row's values, owned (a columnar statement keeps them all).
pub struct Values(pub Vec<Value>);

impl Values {
    pub fn of(row: &Row<'_>, count: usize) -> rusqlite::Result<Values> {
        (0..count)
            .map(|i| row.get_ref(i).map(Value::from))
            .collect::<rusqlite::Result<_>>()
            .map(Values)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl From<ValueRef<'_>> for Value {
    fn from(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(r) => Value::Real(r),
            ValueRef::Text(t) => Value::Text(t.to_vec()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    bytes.split(|&b| b == 0).next().unwrap_or_default()
}

fn write_joined(
    out: &mut dyn Write,
    cells: &[Vec<u8>],
    separator: &str,
    end: &str,
) -> io::Result<()> {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.write_all(separator.as_bytes())?;
        }
        out.write_all(cell)?;
    }
    out.write_all(end.as_bytes())
}

/// A CSV field: quoted when it is empty, holds a space, a control
/// character, a quote (either kind), a non-ASCII byte or the separator.
fn csv_field(text: &[u8], separator: &str) -> Vec<u8> {
    let plain = !text.is_empty()
        && !text
            .iter()
            .any(|&b| b <= b' ' || b == b'"' || b == b'\'' || b >= 0x7f)
        && (separator.is_empty()
            || !text
                .windows(separator.len())
                .any(|w| w == separator.as_bytes()));
    if plain {
        return text.to_vec();
    }
    quoted(text, b'"')
}

/// A text as an SQL string literal: 'it''s'.
fn sql_string(text: &[u8]) -> Vec<u8> {
    quoted(text, b'\'')
}

/// `text` between two `quote`s, each `quote` inside doubled (CSV and SQL
/// alike).
fn quoted(text: &[u8], quote: u8) -> Vec<u8> {
    let mut s = Vec::with_capacity(text.len() + 2);
    s.push(quote);
    for &b in text {
        if b == quote {
            s.push(quote);
        }
        s.push(b);
    }
    s.push(quote);
    s
}

/// A text as `.dump` writes it: line breaks through `char()`, so the
/// dump's lines are the statements' lines.
fn dump_string(text: &[u8]) -> Vec<u8> {
    let cr = text.contains(&b'\r');
    let nl = text.contains(&b'\n');
    if !cr && !nl {
        return sql_string(text);
    }
    let mut inner = Vec::with_capacity(text.len() + 2);
    inner.push(b'\'');
    for &b in text {
        match b {
            b'\'' => inner.extend(b"''"),
            b'\r' => inner.extend(b"\\r"),
            b'\n' => inner.extend(b"\\n"),
            _ => inner.push(b),
        }
    }
    inner.push(b'\'');
    let mut s = Vec::new();
    if nl {
        s.extend(b"replace(");
    }
    if cr {
        s.extend(b"replace(");
    }
    s.extend(inner);
    if cr {
        s.extend(b",'\\r',char(13))");
    }
    if nl {
        s.extend(b",'\\n',char(10))");
    }
    s
}

/// A JSON string as `sqlite3` writes one: bytes as they are, quotes,
/// backslashes and control characters escaped.
fn json_string(text: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(text.len() + 2);
    s.push(b'"');
    for &b in text {
        match b {
            b'"' | b'\\' => s.extend([b'\\', b]),
            0x08 => s.extend(b"\\b"),
            0x0c => s.extend(b"\\f"),
            b'\n' => s.extend(b"\\n"),
            b'\r' => s.extend(b"\\r"),
            b'\t' => s.extend(b"\\t"),
            0..=0x1f => s.extend(format!("\\u{b:04x}").into_bytes()),
            _ => s.push(b),
        }
    }
    s.push(b'"');
    s
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Characters in `line` as `sqlite3` counts them: bytes that do not
/// continue a UTF-8 sequence.
fn width(line: &[u8]) -> usize {
    line.iter().filter(|&&b| b & 0xc0 != 0x80).count()
}

/// The first display line of `z` (tabs expanded to stops of 8, at most
/// `max` characters) and where the rest starts (`None`: nothing left).
/// A control character ends a line; `\r\n` counts as one.
fn display_line(z: &[u8], max: usize, word_wrap: bool) -> (Vec<u8>, Option<&[u8]>) {
    let max = if max == 0 { 1_000_000 } else { max };
    let at = |i: usize| z.get(i).copied().unwrap_or(0);
    let (mut i, mut n) = (0usize, 0usize);
    while n < max {
        let c = at(i);
        if c >= b' ' {
            n += 1;
            i += 1;
            while at(i) & 0xc0 == 0x80 {
                i += 1;
            }
        } else if c == b'\t' {
            loop {
                n += 1;
                if n & 7 == 0 || n >= max {
                    break;
                }
            }
            i += 1;
        } else {
            break;
        }
    }
    let mut end = i;
    if n >= max && word_wrap {
        // Back up to a space, else to a word boundary, in the second half.
        let half = i / 2;
        let mut k = i;
        while k > half && !at(k - 1).is_ascii_whitespace() {
            k -= 1;
        }
        if k <= half {
            k = i;
            while k > half
                && !(at(k - 1).is_ascii_alphanumeric() != at(k).is_ascii_alphanumeric()
                    && at(k) & 0xc0 != 0x80)
            {
                k -= 1;
            }
        }
        if k > half {
            end = k;
            i = k;
            while at(i) == b' ' {
                i += 1;
            }
        }
    }
    let tail = if n >= max && at(i) >= b' ' {
        Some(i)
    } else if at(i) == b'\r' && at(i + 1) == b'\n' {
        (at(i + 2) != 0).then_some(i + 2)
    } else if at(i) == 0 || at(i + 1) == 0 {
        None
    } else {
        Some(i + 1)
    };
    // The line itself, tabs as spaces.
    let mut line = Vec::with_capacity(end);
    let (mut j, mut n) = (0usize, 0usize);
    while j < end {
        let c = at(j);
        if c >= b' ' {
            n += 1;
            line.push(c);
            j += 1;
            while j < end && at(j) & 0xc0 == 0x80 {
                line.push(at(j));
                j += 1;
            }
        } else if c == b'\t' {
            loop {
                n += 1;
                line.push(b' ');
                if n & 7 == 0 || n >= max {
                    break;
                }
            }
            j += 1;
        } else {
            break;
        }
    }
    (line, tail.and_then(|t| z.get(t..)))
}

/// Column, box, table and markdown modes (`sqlite3`'s columnar output).
fn columnar(
    f: &Format,
    columns: &[String],
    rows: &[Vec<Option<Vec<u8>>>],
    out: &mut dyn Write,
) -> io::Result<()> {
    let null = f.null_value.as_bytes();
    // Display lines: the header, then each row's lines (a row with a long
    // or multi-line value takes several).
    let header: Vec<Vec<u8>> = columns
        .iter()
        .map(|c| display_line(c.as_bytes(), f.wrap, f.word_wrap).0)
        .collect();
    let mut lines: Vec<Vec<Vec<u8>>> = Vec::new();
    // Whether each line ends its row.
    let mut ends_row: Vec<bool> = Vec::new();
    for row in rows {
        let mut rest: Vec<Option<&[u8]>> = row
            .iter()
            .map(|cell| Some(cell.as_deref().unwrap_or(null)))
            .collect();
        loop {
            let mut line = Vec::with_capacity(rest.len());
            let mut more = false;
            for r in rest.iter_mut() {
                let (text, tail) = match r {
                    Some(z) => display_line(z, f.wrap, f.word_wrap),
                    None => (Vec::new(), None),
                };
                more |= tail.is_some();
                *r = tail;
                line.push(text);
            }
            lines.push(line);
            ends_row.push(!more);
            if !more {
                break;
            }
        }
    }
    let multi_line = lines.len() > rows.len();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(width(cell));
        }
    }
    let pad = |out: &mut dyn Write, text: &[u8], w: usize| -> io::Result<()> {
        out.write_all(text)?;
        write!(out, "{:1$}", "", w.saturating_sub(width(text)))
    };
    let centered = |out: &mut dyn Write, text: &[u8], w: usize| -> io::Result<()> {
        let n = width(text);
        let left = w.saturating_sub(n) / 2;
        write!(out, "{:1$}", "", left)?;
        out.write_all(text)?;
        write!(out, "{:1$}", "", w.saturating_sub(n) - left)
    };
    let rule = |out: &mut dyn Write, ends: [&str; 3], fill: &str| -> io::Result<()> {
        out.write_all(ends[0].as_bytes())?;
        for (i, w) in widths.iter().enumerate() {
            if i > 0 {
                out.write_all(ends[1].as_bytes())?;
            }
            out.write_all(fill.repeat(w + 2).as_bytes())?;
        }
        out.write_all(ends[2].as_bytes())?;
        out.write_all(b"\n")
    };
    let (open, between, close) = match f.mode {
        Mode::Box => ("\u{2502} ", " \u{2502} ", " \u{2502}\n"),
        Mode::Column => ("", "  ", "\n"),
        _ => ("| ", " | ", " |\n"),
    };
    const BOX_TOP: [&str; 3] = ["\u{250c}", "\u{252c}", "\u{2510}"];
    const BOX_MID: [&str; 3] = ["\u{251c}", "\u{253c}", "\u{2524}"];
    const BOX_BOTTOM: [&str; 3] = ["\u{2514}", "\u{2534}", "\u{2518}"];
    const BOX_LINE: &str = "\u{2500}";
    match f.mode {
        Mode::Column => {
            if f.headers {
                for (i, (h, &w)) in header.iter().zip(&widths).enumerate() {
                    pad(out, h, w)?;
                    out.write_all(if i + 1 == widths.len() { b"\n" } else { b"  " })?;
                }
                for (i, &w) in widths.iter().enumerate() {
                    out.write_all("-".repeat(w).as_bytes())?;
                    out.write_all(if i + 1 == widths.len() { b"\n" } else { b"  " })?;
                }
            }
        }
        Mode::Box => {
            rule(out, BOX_TOP, BOX_LINE)?;
            row_of(out, &header, &widths, (open, between, close), &centered)?;
            rule(out, BOX_MID, BOX_LINE)?;
        }
        Mode::Table => {
            rule(out, ["+"; 3], "-")?;
            row_of(out, &header, &widths, (open, between, close), &centered)?;
            rule(out, ["+"; 3], "-")?;
        }
        _ => {
            row_of(out, &header, &widths, (open, between, close), &centered)?;
            rule(out, ["|"; 3], "-")?;
        }
    }
    for (k, line) in lines.iter().enumerate() {
        row_of(out, line, &widths, (open, between, close), &pad)?;
        if multi_line && ends_row.get(k) == Some(&true) && k + 1 < lines.len() {
            match f.mode {
                Mode::Table => rule(out, ["+"; 3], "-")?,
                Mode::Box => rule(out, BOX_MID, BOX_LINE)?,
                Mode::Column => out.write_all(b"\n")?,
                _ => {}
            }
        }
    }
    match f.mode {
        Mode::Table => rule(out, ["+"; 3], "-"),
        Mode::Box => rule(out, BOX_BOTTOM, BOX_LINE),
        _ => Ok(()),
    }
}

type CellWriter<'a> = &'a dyn Fn(&mut dyn Write, &[u8], usize) -> io::Result<()>;

fn row_of(
    out: &mut dyn Write,
    cells: &[Vec<u8>],
    widths: &[usize],
    (open, between, close): (&str, &str, &str),
    cell: CellWriter<'_>,
) -> io::Result<()> {
    out.write_all(open.as_bytes())?;
    for (i, (text, &w)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            out.write_all(between.as_bytes())?;
        }
        cell(out, text, w)?;
    }
    out.write_all(close.as_bytes())
}

/// REAL to text exactly as SQLite converts it, by asking SQLite on a
/// private in-memory connection (leaked, one per process, so its prepared
/// statements can be kept): `CAST(x AS TEXT)` (15 significant digits, what
/// `sqlite3` shows) and `printf('%!.20g')` (what quote mode, JSON and
/// `.dump` write).
#[derive(Default)]
pub struct RealFormatter {
    statements: Option<[Statement<'static>; 2]>,
}

impl RealFormatter {
    fn statements(&mut self) -> rusqlite::Result<&mut [Statement<'static>; 2]> {
        let s = match self.statements.take() {
            Some(s) => s,
            None => {
                let conn: &'static Connection = Box::leak(Box::new(Connection::open_in_memory()?));
                [
                    conn.prepare("SELECT CAST(?1 AS TEXT)")?,
                    conn.prepare("SELECT printf('%!.20g', ?1)")?,
                ]
            }
        };
        Ok(self.statements.insert(s))
    }

    /// What `sqlite3` shows for a real.
    pub fn text(&mut self, v: f64) -> io::Result<String> {
        self.statements()
            .and_then(|s| s[0].query_row([v], |r| r.get(0)))
            .map_err(io::Error::other)
    }

    /// All of a real's digits; infinities as `1e999` when `big_infinity`
    /// (JSON, `.dump`), else `Inf`.
    pub fn precise(&mut self, v: f64, big_infinity: bool) -> io::Result<String> {
        if big_infinity && v.is_infinite() {
            return Ok(if v > 0.0 { "1e999" } else { "-1e999" }.into());
        }
        self.statements()
            .and_then(|s| s[1].query_row([v], |r| r.get(0)))
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reals_format_like_sqlite() {
        let mut f = RealFormatter::default();
        let cases = [
            (1.5, "1.5", "1.5"),
            (2.0, "2.0", "2.0"),
            (0.25, "0.25", "0.25"),
            (1e20, "1.0e+20", "1.0e+20"),
            (f64::INFINITY, "Inf", "Inf"),
        ];
        for (v, text, precise) in cases {
            assert_eq!(f.text(v).ok().as_deref(), Some(text), "{v}");
            assert_eq!(f.precise(v, false).ok().as_deref(), Some(precise), "{v}");
        }
        assert_eq!(
            f.precise(f64::NEG_INFINITY, true).ok().as_deref(),
            Some("-1e999")
        );
    }

    #[test]
    fn display_lines_split_like_sqlite() {
        let split = |z: &str, max: usize| {
            let mut lines = Vec::new();
            let mut rest = Some(z.as_bytes());
            while let Some(r) = rest {
                let (line, tail) = display_line(r, max, false);
                lines.push(String::from_utf8_lossy(&line).into_owned());
                rest = tail;
            }
            lines
        };
        assert_eq!(split("x\r\ny", 0), ["x", "y"]);
        assert_eq!(split("p\n\nq", 0), ["p", "", "q"]);
        assert_eq!(split("a\tb", 0), ["a       b"]);
        assert_eq!(split("a\u{1}b", 0), ["a", "b"]);
        assert_eq!(split("line\n", 0), ["line"]);
        assert_eq!(split("abcdef", 4), ["abcd", "ef"]);
    }

    #[test]
    fn csv_quotes_what_sqlite_quotes() {
        assert_eq!(csv_field(b"plain", ","), b"plain");
        assert_eq!(csv_field(b"it's", ","), b"\"it's\"");
        assert_eq!(csv_field(b"a b", ","), b"\"a b\"");
        assert_eq!(csv_field(b"", ","), b"\"\"");
        assert_eq!(csv_field(b"x,y", ","), b"\"x,y\"");
        assert_eq!(csv_field(b"say \"hi\"", ","), b"\"say \"\"hi\"\"\"");
    }
}
