//! The jail: which paths a client may name, and whether a path the server resolved is inside
//! `sftp-root-directory`. Pure functions; the driver asks the server to resolve paths
//! (`REALPATH`, which follows symbolic links) and checks the answer here.
//!
//! A client names files by *virtual* paths: `/` is the root of the jail, components are
//! separated by `/`. ztproxy refuses, rather than repairs, anything ambiguous: `..` anywhere
//! (guacd resolves it textually; a refusal is clearer and cannot be raced), backslashes
//! (a separator on Windows servers), NUL and every other control character, a component
//! longer than [`MAX_NAME`] bytes, a path longer than [`MAX_PATH`] bytes or deeper than
//! [`MAX_DEPTH`]. Empty and `.` components are dropped (`//a/./b` is `/a/b`).

/// The longest file name accepted, in bytes (Linux's `NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// The longest virtual path accepted, in bytes (guacd's limit is 2048).
pub const MAX_PATH: usize = 2048;
/// The most components a virtual path may have.
pub const MAX_DEPTH: usize = 64;

/// Why a name or path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JailError {
    /// Not absolute in the jail (`a/b` instead of `/a/b`).
    #[error("the path is not absolute")]
    Relative,
    /// `..` as a component.
    #[error("the path goes up a directory")]
    Parent,
    /// A NUL, control character or backslash.
    #[error("the name holds a control character or a backslash")]
    Character,
    /// Too long or too deep.
    #[error("the name is too long")]
    TooLong,
    /// A file name that is empty, `.`, `..` or holds a `/`.
    #[error("not a file name")]
    NotAName,
    /// The server resolved the path to somewhere outside the root.
    #[error("the path leads outside the root directory")]
    Outside,
}

/// A checked virtual path: its components, each a valid name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualPath {
    components: Vec<String>,
}

impl VirtualPath {
    /// The root of the jail.
    pub fn root() -> Self {
        Self {
            components: Vec::new(),
        }
    }

    /// Parses a client's path.
    pub fn parse(path: &str) -> Result<Self, JailError> {
        if path.len() > MAX_PATH {
            return Err(JailError::TooLong);
        }
        let rest = path.strip_prefix('/').ok_or(JailError::Relative)?;
        let mut components = Vec::new();
        for component in rest.split('/') {
            match component {
                "" | "." => continue,
                ".." => return Err(JailError::Parent),
                name => {
                    check_characters(name)?;
                    if components.len() == MAX_DEPTH {
                        return Err(JailError::TooLong);
                    }
                    components.push(name.to_owned());
                }
            }
        }
        Ok(Self { components })
    }

    /// This path with `name` (a checked file name) appended.
    pub fn join(&self, name: &str) -> Result<Self, JailError> {
        let name = file_name(name)?;
        if self.components.len() == MAX_DEPTH {
            return Err(JailError::TooLong);
        }
        let mut components = self.components.clone();
        components.push(name.to_owned());
        let joined = Self { components };
        if joined.to_string().len() > MAX_PATH {
            return Err(JailError::TooLong);
        }
        Ok(joined)
    }

    /// The parent directory and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(Self, &str)> {
        let (last, parent) = self.components.split_last()?;
        Some((
            Self {
                components: parent.to_vec(),
            },
            last,
        ))
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The server's path for this one, under `root` (a canonical server path).
    pub fn under(&self, root: &[u8]) -> Vec<u8> {
        let mut out = root.to_vec();
        for component in &self.components {
            if out.last() != Some(&b'/') {
                out.push(b'/');
            }
            out.extend_from_slice(component.as_bytes());
        }
        out
    }
}

impl std::fmt::Display for VirtualPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.components.is_empty() {
            return f.write_str("/");
        }
        for component in &self.components {
            write!(f, "/{component}")?;
        }
        Ok(())
    }
}

/// Checks a single file name (an upload's `file` name, a listing's entry).
pub fn file_name(name: &str) -> Result<&str, JailError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(JailError::NotAName);
    }
    check_characters(name)?;
    Ok(name)
}

fn check_characters(name: &str) -> Result<(), JailError> {
    if name.len() > MAX_NAME {
        return Err(JailError::TooLong);
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return Err(JailError::Character);
    }
    Ok(())
}

/// Whether `resolved` (a canonical server path) is `root` or inside it.
pub fn contains(root: &[u8], resolved: &[u8]) -> bool {
    if root == b"/" {
        return resolved.first() == Some(&b'/');
    }
    matches!(resolved.strip_prefix(root), Some([] | [b'/', ..]))
}

/// The virtual path of `resolved` (inside `root`), for audit events.
pub fn virtual_of(root: &[u8], resolved: &[u8]) -> Option<String> {
    if !contains(root, resolved) {
        return None;
    }
    let rest = if root == b"/" {
        resolved
    } else {
        resolved.get(root.len()..)?
    };
    let rest = String::from_utf8_lossy(rest);
    Some(if rest.is_empty() {
        "/".to_owned()
    } else {
        rest.into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_is_refused_in_every_position() {
        for path in [
            "/..",
            "/../etc/passwd",
            "/a/..",
            "/a/../b",
            "/a/b/../../..",
            "/./..",
            "//..//x",
            "/a/.../..",
        ] {
            assert_eq!(VirtualPath::parse(path), Err(JailError::Parent), "{path}");
        }
        // Three dots is a name.
        assert!(VirtualPath::parse("/a/...").is_ok());
    }

    #[test]
    fn names_with_control_characters_backslashes_or_no_root_are_refused() {
        for (path, error) in [
            ("/a\0b", JailError::Character),
            ("/a\nb", JailError::Character),
            ("/a\u{1b}[31m", JailError::Character),
            ("/a\u{85}", JailError::Character),
            ("/a\\..\\..\\etc", JailError::Character),
            ("etc/passwd", JailError::Relative),
            ("", JailError::Relative),
        ] {
            assert_eq!(VirtualPath::parse(path), Err(error), "{path:?}");
        }
    }

    #[test]
    fn long_names_and_deep_paths_are_refused() {
        let long = format!("/{}", "x".repeat(64 * 1024));
        assert_eq!(VirtualPath::parse(&long), Err(JailError::TooLong));
        let name = format!("/{}", "x".repeat(256));
        assert_eq!(VirtualPath::parse(&name), Err(JailError::TooLong));
        let deep = "/d".repeat(MAX_DEPTH + 1);
        assert_eq!(VirtualPath::parse(&deep), Err(JailError::TooLong));
        assert!(VirtualPath::parse(&"/d".repeat(MAX_DEPTH)).is_ok());
        assert_eq!(file_name(&"x".repeat(65536)), Err(JailError::TooLong));
    }

    #[test]
    fn absolute_paths_stay_under_the_root() {
        let path = VirtualPath::parse("//etc/./passwd").unwrap();
        assert_eq!(path.to_string(), "/etc/passwd");
        assert_eq!(path.under(b"/srv/jail"), b"/srv/jail/etc/passwd");
        assert_eq!(VirtualPath::root().under(b"/srv/jail"), b"/srv/jail");
        assert_eq!(path.under(b"/"), b"/etc/passwd");
    }

    #[test]
    fn upload_names_are_single_components() {
        for bad in ["", ".", "..", "a/b", "/etc/passwd", "a\0", "x\r"] {
            assert!(file_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(file_name("report (1).pdf"), Ok("report (1).pdf"));
        assert_eq!(file_name("日本語.txt"), Ok("日本語.txt"));
    }

    #[test]
    fn containment_is_by_component_not_by_prefix() {
        assert!(contains(b"/srv/jail", b"/srv/jail"));
        assert!(contains(b"/srv/jail", b"/srv/jail/a"));
        assert!(!contains(b"/srv/jail", b"/srv/jail2"));
        assert!(!contains(b"/srv/jail", b"/srv"));
        assert!(!contains(b"/srv/jail", b"/etc/passwd"));
        assert!(contains(b"/", b"/etc"));
        assert_eq!(
            virtual_of(b"/srv/jail", b"/srv/jail/a/b").as_deref(),
            Some("/a/b")
        );
        assert_eq!(virtual_of(b"/srv/jail", b"/srv/jail").as_deref(), Some("/"));
        assert_eq!(virtual_of(b"/srv/jail", b"/etc"), None);
    }
}
