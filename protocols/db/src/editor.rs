//! The console's line editor, without I/O: the terminal's key bytes in, echo bytes and
//! complete statements out, as `psql` and `mysql` (readline) behave.
//!
//! * Typing inserts at the cursor; Left/Right, Home/End (and Ctrl-A/Ctrl-E) move it;
//!   Backspace and Delete remove; Ctrl-U clears the line.
//! * Return ends a line. A statement is complete at a `;` outside quotes and comments
//!   ([`Dialect`] knows PostgreSQL's dollar quotes, MySQL's backticks and backslash escapes);
//!   until then lines gather under the continuation prompt. Several statements on one line
//!   run one after the other. A line starting with `\` is a meta command.
//! * Up/Down walk the history (the last [`MAX_HISTORY`] statements).
//! * Ctrl-C abandons what is typed; Ctrl-D on an empty line leaves.
//!
//! Input is queued and taken one result at a time ([`Editor::poll`]), so lines pasted at once
//! run one after the other with their prompts between, as typed. Everything is bounded: the
//! queue at [`MAX_QUEUE`] bytes, a statement at [`MAX_STATEMENT`] bytes (the rest is refused
//! with a bell).

use std::collections::VecDeque;

use unicode_width::UnicodeWidthChar;

/// The most statements the history keeps.
pub const MAX_HISTORY: usize = 500;
/// The most bytes of typed-ahead input kept.
pub const MAX_QUEUE: usize = 1 << 20;
/// The longest statement accepted, in bytes.
pub const MAX_STATEMENT: usize = 1 << 20;

/// Which SQL's quoting rules find the end of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL: `'…'` (doubled quotes), `"…"`, `$tag$…$tag$`, `--` and nested `/* */`.
    Postgres,
    /// MySQL and MariaDB: `'…'` and `"…"` with backslash escapes, `` `…` ``, `--`, `#` and
    /// `/* */`.
    Mysql,
    /// SQL Server: `'…'`, `"…"`, `[…]`, `--` and nested `/* */`.
    Tsql,
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A statement to run, with its `;`.
    Statement(String),
    /// A meta command (`\dt users`), without its line end.
    Meta(String),
    /// Ctrl-D on an empty line.
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    Esc,
    Csi,
    Ss3,
}

/// The line editor. See the module docs.
#[derive(Debug)]
pub struct Editor {
    dialect: Dialect,
    prompt: String,
    continuation: String,
    line: Vec<char>,
    /// The line's length in bytes (UTF-8).
    line_bytes: usize,
    cursor: usize,
    /// The line on the screen is not the line: rewritten once the input queued is taken, so
    /// a paste into the middle of a line costs one rewrite, not one per character.
    dirty: bool,
    /// Earlier lines of the statement being typed, each ended by `\n`.
    pending: String,
    /// Statements complete but not yet taken (several on one line).
    ready: VecDeque<String>,
    history: VecDeque<String>,
    /// Where Up/Down are in the history, and the line typed before browsing.
    browsing: Option<(usize, Vec<char>)>,
    queue: VecDeque<u8>,
    escape: Escape,
    csi: Vec<u8>,
    utf8: Vec<u8>,
}

impl Editor {
    /// An editor for `dialect` with `prompt` and `continuation` prompts.
    pub fn new(dialect: Dialect, prompt: &str, continuation: &str) -> Self {
        Self {
            dialect,
            prompt: prompt.to_owned(),
            continuation: continuation.to_owned(),
            line: Vec::new(),
            line_bytes: 0,
            cursor: 0,
            dirty: false,
            pending: String::new(),
            ready: VecDeque::new(),
            history: VecDeque::new(),
            browsing: None,
            queue: VecDeque::new(),
            escape: Escape::None,
            csi: Vec::new(),
            utf8: Vec::new(),
        }
    }

    /// Changes the prompts (after `\c` names another database).
    pub fn set_prompts(&mut self, prompt: &str, continuation: &str) {
        prompt.clone_into(&mut self.prompt);
        continuation.clone_into(&mut self.continuation);
    }

    /// Queues the terminal's bytes (keys, pastes); beyond [`MAX_QUEUE`] they are dropped.
    pub fn feed(&mut self, bytes: &[u8]) {
        let room = MAX_QUEUE.saturating_sub(self.queue.len());
        self.queue.extend(&bytes[..bytes.len().min(room)]);
    }

    /// Drops everything typed ahead and the statement being typed (Ctrl-C while a query
    /// runs).
    pub fn interrupt(&mut self) {
        self.queue.clear();
        self.ready.clear();
        self.pending.clear();
        self.clear_line();
        self.escape = Escape::None;
        self.browsing = None;
    }

    fn clear_line(&mut self) {
        self.line.clear();
        self.line_bytes = 0;
        self.cursor = 0;
        self.dirty = false;
    }

    fn set_line(&mut self, line: Vec<char>) {
        self.line_bytes = line.iter().map(|c| c.len_utf8()).sum();
        self.line = line;
        self.cursor = self.line.len();
        self.dirty = true;
    }

    /// Rewrites the line if it changed out of sight.
    fn sync(&mut self, out: &mut Vec<u8>) {
        if self.dirty {
            self.dirty = false;
            self.redraw(out);
        }
    }

    /// Writes the prompt for what is being typed, and the line so far.
    pub fn prompt(&self, out: &mut Vec<u8>) {
        let prompt = if self.pending.is_empty() {
            &self.prompt
        } else {
            &self.continuation
        };
        out.extend_from_slice(prompt.as_bytes());
        let line: String = self.line.iter().collect();
        out.extend_from_slice(line.as_bytes());
        self.move_back(self.cursor, out);
    }

    /// Edits with the queued input until something is asked for; echo goes to `out`.
    pub fn poll(&mut self, out: &mut Vec<u8>) -> Option<Input> {
        if let Some(statement) = self.ready.pop_front() {
            return Some(Input::Statement(statement));
        }
        while let Some(byte) = self.queue.pop_front() {
            if let Some(input) = self.byte(byte, out) {
                return Some(input);
            }
            if let Some(statement) = self.ready.pop_front() {
                return Some(Input::Statement(statement));
            }
        }
        self.sync(out);
        None
    }

    fn byte(&mut self, byte: u8, out: &mut Vec<u8>) -> Option<Input> {
        match self.escape {
            Escape::Esc => {
                self.escape = match byte {
                    b'[' => {
                        self.csi.clear();
                        Escape::Csi
                    }
                    b'O' => Escape::Ss3,
                    _ => Escape::None,
                };
                return None;
            }
            Escape::Csi => {
                if (0x40..=0x7e).contains(&byte) {
                    self.escape = Escape::None;
                    let params = std::mem::take(&mut self.csi);
                    self.csi_key(&params, byte, out);
                } else if self.csi.len() < 16 {
                    self.csi.push(byte);
                }
                return None;
            }
            Escape::Ss3 => {
                self.escape = Escape::None;
                self.csi_key(&[], byte, out);
                return None;
            }
            Escape::None => {}
        }
        match byte {
            0x1b => self.escape = Escape::Esc,
            b'\r' | b'\n' => return self.enter(out),
            0x7f | 0x08 => {
                if self.cursor > 0 {
                    self.cursor -= 1;
                    self.remove();
                }
            }
            0x01 => self.home(),
            0x05 => self.end(),
            0x15 => {
                self.clear_line();
                self.dirty = true;
            }
            0x03 => {
                // Abandon the statement being typed: a fresh prompt on a new line.
                self.sync(out);
                out.extend_from_slice(b"^C\r\n");
                self.pending.clear();
                self.clear_line();
                self.browsing = None;
                self.prompt(out);
            }
            0x04 => {
                if self.line.is_empty() && self.pending.is_empty() {
                    self.sync(out);
                    out.extend_from_slice(b"\r\n");
                    return Some(Input::Eof);
                }
                if self.cursor < self.line.len() {
                    self.remove();
                }
            }
            b'\t' => self.insert(' ', out),
            0x00..=0x1f => {}
            _ => {
                self.utf8.push(byte);
                match std::str::from_utf8(&self.utf8) {
                    Ok(text) => {
                        let c = text.chars().next();
                        self.utf8.clear();
                        if let Some(c) = c {
                            self.insert(c, out);
                        }
                    }
                    Err(e) if e.error_len().is_some() || self.utf8.len() >= 4 => {
                        self.utf8.clear();
                    }
                    Err(_) => {}
                }
            }
        }
        None
    }

    fn csi_key(&mut self, params: &[u8], key: u8, out: &mut Vec<u8>) {
        // Cursor moves are relative to what the screen shows.
        self.sync(out);
        match (params, key) {
            (_, b'A') => self.history_step(true, out),
            (_, b'B') => self.history_step(false, out),
            (_, b'C') if self.cursor < self.line.len() => {
                out.extend_from_slice(b"\x1b[C");
                self.cursor += 1;
                if self.line.get(self.cursor - 1).and_then(|c| c.width()) == Some(2) {
                    out.extend_from_slice(b"\x1b[C");
                }
            }
            (_, b'D') if self.cursor > 0 => {
                self.cursor -= 1;
                self.move_back_chars(self.cursor, self.cursor + 1, out);
            }
            (_, b'H') | (b"1" | b"7", b'~') => self.home(),
            (_, b'F') | (b"4" | b"8", b'~') => self.end(),
            (b"3", b'~') if self.cursor < self.line.len() => self.remove(),
            _ => {}
        }
    }

    fn insert(&mut self, c: char, out: &mut Vec<u8>) {
        if self.pending.len() + self.line_bytes + c.len_utf8() > MAX_STATEMENT {
            out.push(0x07);
            return;
        }
        self.line.insert(self.cursor, c);
        self.line_bytes += c.len_utf8();
        self.cursor += 1;
        if self.cursor == self.line.len() && !self.dirty {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        } else {
            self.dirty = true;
        }
    }

    /// Removes the character at the cursor.
    fn remove(&mut self) {
        if self.cursor < self.line.len() {
            let c = self.line.remove(self.cursor);
            self.line_bytes -= c.len_utf8();
            self.dirty = true;
        }
    }

    fn home(&mut self) {
        self.cursor = 0;
        self.dirty = true;
    }

    fn end(&mut self) {
        self.cursor = self.line.len();
        self.dirty = true;
    }

    /// Rewrites the line after the prompt and puts the cursor back.
    fn redraw(&self, out: &mut Vec<u8>) {
        out.push(b'\r');
        out.extend_from_slice(b"\x1b[K");
        self.prompt(out);
    }

    /// Moves the terminal's cursor from the line's end back to `cursor`.
    fn move_back(&self, cursor: usize, out: &mut Vec<u8>) {
        self.move_back_chars(cursor, self.line.len(), out);
    }

    fn move_back_chars(&self, from: usize, to: usize, out: &mut Vec<u8>) {
        let width: usize = self
            .line
            .get(from..to)
            .unwrap_or_default()
            .iter()
            .map(|c| c.width().unwrap_or(0))
            .sum();
        if width > 0 {
            out.extend_from_slice(format!("\x1b[{width}D").as_bytes());
        }
    }

    fn history_step(&mut self, back: bool, out: &mut Vec<u8>) {
        if self.history.is_empty() {
            return;
        }
        let next = match (&self.browsing, back) {
            (None, true) => Some(self.history.len() - 1),
            (None, false) => return,
            (Some((0, _)), true) => Some(0),
            (Some((at, _)), true) => Some(at - 1),
            (Some((at, _)), false) if at + 1 < self.history.len() => Some(at + 1),
            (Some(_), false) => None,
        };
        match next {
            Some(at) => {
                let saved = match self.browsing.take() {
                    Some((_, saved)) => saved,
                    None => self.line.clone(),
                };
                let entry = self
                    .history
                    .get(at)
                    .map(|h| h.chars().collect())
                    .unwrap_or_default();
                self.set_line(entry);
                self.browsing = Some((at, saved));
            }
            None => {
                if let Some((_, saved)) = self.browsing.take() {
                    self.set_line(saved);
                }
            }
        }
        self.sync(out);
    }

    fn enter(&mut self, out: &mut Vec<u8>) -> Option<Input> {
        self.sync(out);
        out.extend_from_slice(b"\r\n");
        self.browsing = None;
        let line: String = std::mem::take(&mut self.line).into_iter().collect();
        self.clear_line();
        // `quit` and `exit` alone leave, as in psql and mysql.
        let word = line
            .trim()
            .trim_end_matches(';')
            .trim_end()
            .to_ascii_lowercase();
        if self.pending.is_empty() && (word == "quit" || word == "exit") {
            self.remember(line.trim());
            return Some(Input::Meta("\\q".to_owned()));
        }
        if self.pending.is_empty() && line.trim_start().starts_with('\\') {
            let meta = line.trim().to_owned();
            self.remember(&meta);
            return Some(Input::Meta(meta));
        }
        let mut text = std::mem::take(&mut self.pending);
        text.push_str(&line);
        let (statements, rest) = split(self.dialect, &text);
        if !statements.is_empty() {
            let entry = statements.join(" ");
            self.remember(&entry);
        }
        self.ready.extend(statements);
        if !rest.trim().is_empty() {
            self.pending = rest;
            self.pending.push('\n');
        }
        if self.ready.is_empty() {
            self.prompt(out);
        }
        None
    }

    fn remember(&mut self, entry: &str) {
        let entry = entry.replace('\n', " ");
        if entry.trim().is_empty() || self.history.back() == Some(&entry) {
            return;
        }
        if self.history.len() == MAX_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(entry);
    }
}

/// Splits `text` into complete statements (trimmed, each with its `;`) and what is left.
pub fn split(dialect: Dialect, text: &str) -> (Vec<String>, String) {
    let mut statements = Vec::new();
    let mut start = 0;
    let mut scanner = Scanner::new(dialect);
    for (at, c) in text.char_indices() {
        if scanner.next(c, text.get(at..).unwrap_or_default()) {
            let end = at + c.len_utf8();
            let statement = text.get(start..end).unwrap_or_default().trim();
            if statement != ";" {
                statements.push(statement.to_owned());
            }
            start = end;
        }
    }
    (statements, text.get(start..).unwrap_or_default().to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Normal,
    Quoted(char),
    /// A backslash inside a MySQL string: the next character is literal.
    Escaped(char),
    LineComment,
    BlockComment(u32),
    /// Inside `$tag$ … $tag$`.
    Dollar(String),
    /// Inside SQL Server's `[name]`.
    Bracket,
}

/// Finds statement ends, one character at a time.
struct Scanner {
    dialect: Dialect,
    state: State,
    previous: char,
    /// Characters of the current dollar tag still to skip (its own characters, already seen
    /// whole).
    skip: usize,
}

impl Scanner {
    fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            state: State::Normal,
            previous: '\0',
            skip: 0,
        }
    }

    /// Takes `c` (with `rest`, the text from `c` on); true when `c` ends a statement.
    fn next(&mut self, c: char, rest: &str) -> bool {
        let previous = std::mem::replace(&mut self.previous, c);
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        let mut ends = false;
        self.state = match std::mem::replace(&mut self.state, State::Normal) {
            State::Normal => match c {
                ';' => {
                    ends = true;
                    State::Normal
                }
                '\'' | '"' => State::Quoted(c),
                '`' if self.dialect == Dialect::Mysql => State::Quoted(c),
                '[' if self.dialect == Dialect::Tsql => State::Bracket,
                '#' if self.dialect == Dialect::Mysql => State::LineComment,
                '-' if previous == '-' => State::LineComment,
                '*' if previous == '/' => {
                    // So `/*/` does not close what it opens.
                    self.previous = '\0';
                    State::BlockComment(1)
                }
                '$' if self.dialect == Dialect::Postgres => match dollar_tag(rest) {
                    Some(tag) => {
                        self.skip = tag.chars().count() - 1;
                        State::Dollar(tag)
                    }
                    None => State::Normal,
                },
                _ => State::Normal,
            },
            State::Quoted(q) => {
                if c == q {
                    State::Normal
                } else if c == '\\' && self.dialect == Dialect::Mysql && q != '`' {
                    State::Escaped(q)
                } else {
                    State::Quoted(q)
                }
            }
            State::Escaped(q) => {
                self.previous = '\0';
                State::Quoted(q)
            }
            State::LineComment => {
                if c == '\n' {
                    State::Normal
                } else {
                    State::LineComment
                }
            }
            State::BlockComment(depth) => {
                if c == '/' && previous == '*' {
                    self.previous = '\0';
                    if depth <= 1 {
                        State::Normal
                    } else {
                        State::BlockComment(depth - 1)
                    }
                } else if c == '*' && previous == '/' && self.dialect != Dialect::Mysql {
                    self.previous = '\0';
                    State::BlockComment(depth.saturating_add(1))
                } else {
                    State::BlockComment(depth)
                }
            }
            State::Dollar(tag) => {
                if c == '$' && rest.starts_with(tag.as_str()) {
                    self.skip = tag.chars().count() - 1;
                    State::Normal
                } else {
                    State::Dollar(tag)
                }
            }
            State::Bracket => {
                if c == ']' {
                    State::Normal
                } else {
                    State::Bracket
                }
            }
        };
        ends
    }
}

/// The dollar-quote tag (`$$`, `$body$`) `rest` starts with, if it is one.
fn dollar_tag(rest: &str) -> Option<String> {
    let after = rest.strip_prefix('$')?;
    let end = after.find('$')?;
    let name = after.get(..end)?;
    let valid = name
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_alphabetic() || (i > 0 && c.is_ascii_digit()));
    (valid && end <= 64).then(|| format!("${name}$"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(editor: &mut Editor, keys: &[u8]) -> (Vec<Input>, String) {
        editor.feed(keys);
        let mut out = Vec::new();
        let mut inputs = Vec::new();
        while let Some(input) = editor.poll(&mut out) {
            inputs.push(input);
        }
        (inputs, String::from_utf8(out).unwrap())
    }

    fn statements(inputs: &[Input]) -> Vec<&str> {
        inputs
            .iter()
            .filter_map(|i| match i {
                Input::Statement(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn statements_end_at_a_semicolon_outside_quotes_and_comments() {
        let (done, rest) = split(
            Dialect::Postgres,
            "select ';' as a; -- x;\nselect $f$ ; $f$, \"a;b\" /* ; /* ; */ ; */ ;select",
        );
        assert_eq!(
            done,
            vec![
                "select ';' as a;",
                "-- x;\nselect $f$ ; $f$, \"a;b\" /* ; /* ; */ ; */ ;"
            ]
        );
        assert_eq!(rest, "select");
        let (done, _) = split(Dialect::Mysql, "select 'it\\'s;', `a;b` # ;\n;");
        assert_eq!(done, vec!["select 'it\\'s;', `a;b` # ;\n;"]);
        let (done, rest) = split(Dialect::Mysql, "select 1 # ;");
        assert!(done.is_empty() && rest == "select 1 # ;");
        let (done, _) = split(Dialect::Tsql, "select [a;b] from t;");
        assert_eq!(done, vec!["select [a;b] from t;"]);
    }

    #[test]
    fn lines_gather_until_the_statement_ends_and_pasted_lines_run_in_turn() {
        let mut e = Editor::new(Dialect::Postgres, "db=> ", "db-> ");
        let (inputs, out) = typed(&mut e, b"select 1,\r");
        assert!(inputs.is_empty());
        assert_eq!(out, "select 1,\r\ndb-> ");
        let (inputs, _) = typed(&mut e, b"2; select 3;\rselect 4;\r");
        // One result at a time: the second line waits in the queue.
        assert_eq!(
            statements(&inputs),
            vec!["select 1,\n2;", "select 3;", "select 4;"]
        );
        let (inputs, out) = typed(&mut e, b"\\dt  users \r");
        assert_eq!(inputs, vec![Input::Meta("\\dt  users".into())]);
        assert_eq!(out, "\\dt  users \r\n");
        let (inputs, _) = typed(&mut e, b"\x04");
        assert_eq!(inputs, vec![Input::Eof]);
        let (inputs, _) = typed(&mut e, b" Quit \rexit;\r");
        assert_eq!(
            inputs,
            vec![Input::Meta("\\q".into()), Input::Meta("\\q".into())]
        );
    }

    #[test]
    fn editing_keys_and_history() {
        let mut e = Editor::new(Dialect::Postgres, "> ", "- ");
        // Left twice, insert, Home, Delete, End, Backspace.
        let (inputs, _) = typed(&mut e, b"selct 1;\x1b[D\x1b[D\x1b[D\x1b[D\x1b[De\r");
        assert_eq!(statements(&inputs), vec!["select 1;"]);
        let (inputs, _) = typed(&mut e, b"xselect 2;;\x01\x1b[3~\x05\x7f\r");
        assert_eq!(statements(&inputs), vec!["select 2;"]);
        // Up twice recalls the first, Down the second, Ctrl-U clears.
        let (inputs, _) = typed(&mut e, b"\x1b[A\x1b[A\r");
        assert_eq!(statements(&inputs), vec!["select 1;"]);
        let (inputs, _) = typed(&mut e, b"\x1b[A\x1b[A\x1b[B\r");
        assert_eq!(statements(&inputs), vec!["select 1;"]);
        let (inputs, out) = typed(&mut e, b"junk\x15select 3;\x03");
        assert!(inputs.is_empty());
        assert!(out.ends_with("^C\r\n> "), "{out:?}");
        // Non-ASCII text, split across feeds.
        e.feed("select 'é".as_bytes().split_at(9).0);
        let (inputs, _) = typed(&mut e, &"select 'é…';\r".as_bytes()[9..]);
        assert_eq!(statements(&inputs), vec!["select 'é…';"]);
    }

    #[test]
    fn hostile_input_is_bounded() {
        let mut e = Editor::new(Dialect::Postgres, "> ", "- ");
        e.feed(&vec![b'a'; 3 * MAX_QUEUE]);
        assert!(e.queue.len() <= MAX_QUEUE);
        let mut out = Vec::new();
        assert!(e.poll(&mut out).is_none());
        e.feed(&[0x1b, b'[']);
        e.feed(&[b'1'; 10_000]);
        e.feed(b"~\x1b\x1b\x1bO\xff\xfe");
        assert!(e.poll(&mut out).is_none());
        assert!(e.csi.len() <= 16);
    }
}
