//! The exec or attach request: `/api/v1/namespaces/{namespace}/pods/{pod}/{exec|attach}`
//! with its query.
//!
//! Names are checked as Kubernetes checks them (a namespace and a container are DNS-1123
//! labels, a pod a DNS-1123 subdomain), so a session's parameters can never reach another
//! path or add query parameters. The command goes as one `command=` per argument, which the
//! server runs without a shell; every byte outside RFC 3986's unreserved set is
//! percent-encoded. Only stdin, stdout and a tty are asked for: with a tty the kubelet drops
//! stderr anyway.

use std::fmt::Write as _;

/// The longest command line accepted, in bytes (all arguments together).
pub const MAX_COMMAND_LEN: usize = 8 * 1024;

/// What to open in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Run a new process (`argv[0]` and its arguments).
    Exec(Vec<String>),
    /// Attach to the container's main process.
    Attach,
}

/// The pod and container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The container; `None` lets the server pick (it must be the pod's only one).
    pub container: Option<String>,
}

/// A name or command Kubernetes would not accept. The text names the field, not the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not a valid name for its field.
    #[error("{0} is not a valid Kubernetes name (lowercase letters, digits and '-')")]
    Name(&'static str),
    /// An empty command, an empty program name, or a command over [`MAX_COMMAND_LEN`].
    #[error("the exec command is empty or longer than {MAX_COMMAND_LEN} bytes")]
    Command,
}

/// The request's path and query (what follows the host).
pub fn path_and_query(target: &Target, call: &Call) -> Result<String, RequestError> {
    if !is_label(&target.namespace) {
        return Err(RequestError::Name("namespace"));
    }
    if !is_subdomain(&target.pod) {
        return Err(RequestError::Name("pod"));
    }
    let mut path = format!(
        "/api/v1/namespaces/{}/pods/{}/{}?",
        target.namespace,
        target.pod,
        match call {
            Call::Exec(_) => "exec",
            Call::Attach => "attach",
        }
    );
    if let Call::Exec(argv) = call {
        let len: usize = argv.iter().map(String::len).sum();
        if argv.first().is_none_or(String::is_empty) || len > MAX_COMMAND_LEN {
            return Err(RequestError::Command);
        }
        for arg in argv {
            path.push_str("command=");
            escape_into(&mut path, arg);
            path.push('&');
        }
    }
    if let Some(container) = &target.container {
        if !is_label(container) {
            return Err(RequestError::Name("container"));
        }
        let _ = write!(path, "container={container}&");
    }
    path.push_str("stdin=true&stdout=true&tty=true");
    Ok(path)
}

/// A DNS-1123 label: 1–63 of `a-z0-9-`, starting and ending with a letter or digit.
pub fn is_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A DNS-1123 subdomain: labels joined by `.`, at most 253 bytes.
pub fn is_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_label)
}

fn escape_into(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(namespace: &str, pod: &str, container: Option<&str>) -> Target {
        Target {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.map(Into::into),
        }
    }

    #[test]
    fn exec_and_attach_paths_are_kubectls() {
        let shop = target("shop", "web-0", Some("app"));
        assert_eq!(
            path_and_query(&shop, &Call::Exec(vec!["/bin/sh".into()])).unwrap(),
            "/api/v1/namespaces/shop/pods/web-0/exec?command=%2Fbin%2Fsh&container=app&stdin=true&stdout=true&tty=true"
        );
        assert_eq!(
            path_and_query(
                &target("default", "db.v2", None),
                &Call::Exec(vec![
                    "sh".into(),
                    "-c".into(),
                    "echo zt-$((6*7)) & ü".into()
                ])
            )
            .unwrap(),
            "/api/v1/namespaces/default/pods/db.v2/exec?command=sh&command=-c&command=echo%20zt-%24%28%286%2A7%29%29%20%26%20%C3%BC&stdin=true&stdout=true&tty=true"
        );
        assert_eq!(
            path_and_query(&shop, &Call::Attach).unwrap(),
            "/api/v1/namespaces/shop/pods/web-0/attach?container=app&stdin=true&stdout=true&tty=true"
        );
    }

    #[test]
    fn names_cannot_change_the_path_or_the_query() {
        let exec = Call::Exec(vec!["sh".into()]);
        for (t, field) in [
            (target("../kube-system", "p", None), "namespace"),
            (target("Shop", "p", None), "namespace"),
            (target("", "p", None), "namespace"),
            (target("shop", "p/../../x", None), "pod"),
            (target("shop", "p?x=1", None), "pod"),
            (target("shop", "p..q", None), "pod"),
            (target("shop", "p", Some("a&command=rm")), "container"),
            (target("shop", "p", Some("-a")), "container"),
            (target(&"a".repeat(64), "p", None), "namespace"),
        ] {
            assert_eq!(
                path_and_query(&t, &exec),
                Err(RequestError::Name(field)),
                "{t:?}"
            );
        }
        let shop = target("shop", "p", None);
        assert_eq!(
            path_and_query(&shop, &Call::Exec(vec![])),
            Err(RequestError::Command)
        );
        assert_eq!(
            path_and_query(&shop, &Call::Exec(vec![String::new()])),
            Err(RequestError::Command)
        );
        assert_eq!(
            path_and_query(&shop, &Call::Exec(vec!["x".repeat(MAX_COMMAND_LEN + 1)])),
            Err(RequestError::Command)
        );
    }
}
