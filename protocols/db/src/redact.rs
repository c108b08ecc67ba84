//! What a statement looks like in the audit log: passwords in it replaced, and cut short.
//!
//! The literal after `PASSWORD` (`ALTER USER … PASSWORD '…'`, `ENCRYPTED PASSWORD`,
//! `SET PASSWORD = '…'`, `PASSWORD('…')`), after `IDENTIFIED [WITH plugin] BY` (MySQL) and
//! after `SECRET` becomes `'***'`, whatever its quoting (`'…'` with doubled or escaped quotes,
//! `"…"`, `$tag$…$tag$`) — and so does the session's own password wherever it appears.
//! Meta commands that set a password (`\password`) are never passed with their arguments.

use std::sync::LazyLock;

use regex::Regex;

/// The most characters of a statement an audit event carries.
pub const MAX_AUDITED: usize = 4096;

static PASSWORD_LITERAL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r#"(?is)\b(password|identified\s+(?:with\s+\S+\s+)?by|secret)(\s*(?:=\s*)?(?:\(\s*)?)('(?:[^'\\]|''|\\.)*'?|"(?:[^"\\]|""|\\.)*"?|\$\$.*?(?:\$\$|$)|\$[A-Za-z_][A-Za-z0-9_]*\$.*?(?:\$[A-Za-z_][A-Za-z0-9_]*\$|$))"#,
    )
    .ok()
});

/// `statement` as the audit log may hold it: passwords replaced (and `known`, the session's
/// password, wherever it appears), cut at [`MAX_AUDITED`] characters.
pub fn for_audit(statement: &str, known: Option<&str>) -> String {
    let mut text = match PASSWORD_LITERAL.as_ref() {
        Some(regex) => regex.replace_all(statement, "$1$2'***'").into_owned(),
        // The pattern is fixed; if it ever failed to build, audit nothing of the text.
        None => "(statement withheld)".to_owned(),
    };
    if let Some(known) = known.filter(|k| k.len() >= 3) {
        text = text.replace(known, "***");
    }
    let lower = text.trim_start().to_ascii_lowercase();
    if lower.starts_with("\\password") {
        text = "\\password".to_owned();
    }
    if text.chars().count() > MAX_AUDITED {
        text = text.chars().take(MAX_AUDITED).collect::<String>() + "…";
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_replaced_whatever_the_syntax() {
        for (statement, expected) in [
            (
                "ALTER USER bob WITH PASSWORD 'hunter2';",
                "ALTER USER bob WITH PASSWORD '***';",
            ),
            (
                "create role x login encrypted password 'it''s secret' valid until 'x';",
                "create role x login encrypted password '***' valid until 'x';",
            ),
            (
                "CREATE USER 'a'@'%' IDENTIFIED BY 'p\\'w';",
                "CREATE USER 'a'@'%' IDENTIFIED BY '***';",
            ),
            (
                "ALTER USER a IDENTIFIED WITH mysql_native_password BY \"pw\";",
                "ALTER USER a IDENTIFIED WITH mysql_native_password BY '***';",
            ),
            (
                "SET PASSWORD = PASSWORD('pw');",
                "SET PASSWORD = PASSWORD('***');",
            ),
            (
                "alter user b password $q$pw$q$;",
                "alter user b password '***';",
            ),
            (
                "alter user b password 'never-closed",
                "alter user b password '***'",
            ),
        ] {
            assert_eq!(for_audit(statement, None), expected);
        }
        assert_eq!(
            for_audit("select 'vault-pw-1' as leak;", Some("vault-pw-1")),
            "select '***' as leak;"
        );
        assert_eq!(for_audit("\\password bob", None), "\\password");
        assert_eq!(
            for_audit(&"x".repeat(10_000), None).chars().count(),
            MAX_AUDITED + 1
        );
        // Nothing else is touched.
        assert_eq!(
            for_audit("select password_hash from users;", None),
            "select password_hash from users;"
        );
    }
}
