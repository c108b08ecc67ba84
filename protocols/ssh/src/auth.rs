//! Which authentication method to try next, and how keyboard-interactive prompts are answered
//! from the session's credentials. No I/O: the driver (`connect.rs`) asks, tries, and tells.
//!
//! The order is guacd's: the private key first when there is one, then the password — as
//! `password`, or, when the server offers only that, as the answers to
//! `keyboard-interactive`. A method the server did not list after a failure is skipped; each
//! is tried at most once.

/// An authentication method the proxy can try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `publickey` with `private-key`.
    PublicKey,
    /// `password`.
    Password,
    /// `keyboard-interactive`, answered from `username` and `password`.
    KeyboardInteractive,
}

impl Method {
    /// The SSH name (RFC 4252, RFC 4256).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PublicKey => "publickey",
            Self::Password => "password",
            Self::KeyboardInteractive => "keyboard-interactive",
        }
    }
}

/// The methods left to try, in order.
#[derive(Debug, Clone)]
pub struct AuthPlan {
    untried: Vec<Method>,
    tried: Vec<Method>,
}

impl AuthPlan {
    /// A plan for a session with a private key and/or a password.
    pub fn new(has_key: bool, has_password: bool) -> Self {
        let mut untried = Vec::new();
        if has_key {
            untried.push(Method::PublicKey);
        }
        if has_password {
            untried.push(Method::Password);
            untried.push(Method::KeyboardInteractive);
        }
        Self {
            untried,
            tried: Vec::new(),
        }
    }

    /// The next method to try; `allowed` is what the server listed after the last failure
    /// (`None` before the first attempt: try in order).
    pub fn next(&mut self, allowed: Option<&[Method]>) -> Option<Method> {
        let position = self
            .untried
            .iter()
            .position(|m| allowed.is_none_or(|allowed| allowed.contains(m)))?;
        let method = self.untried.remove(position);
        self.tried.push(method);
        Some(method)
    }

    /// The methods tried so far, by name.
    pub fn tried(&self) -> Vec<&'static str> {
        self.tried.iter().map(|m| m.as_str()).collect()
    }
}

/// The most prompts answered in one keyboard-interactive round, and the most rounds.
pub const MAX_PROMPTS: usize = 16;
/// See [`MAX_PROMPTS`].
pub const MAX_ROUNDS: usize = 8;

/// The answers to one round of keyboard-interactive prompts (`echo` tells whether the server
/// would show the answer): the password for each hidden prompt, the user name for a shown
/// one that asks for it, nothing for any other. `None` when there are more prompts than
/// [`MAX_PROMPTS`].
pub fn answer_prompts<'a>(
    prompts: impl ExactSizeIterator<Item = (&'a str, bool)>,
    username: &str,
    password: &str,
) -> Option<Vec<String>> {
    if prompts.len() > MAX_PROMPTS {
        return None;
    }
    Some(
        prompts
            .map(|(prompt, echo)| {
                if !echo {
                    password.to_owned()
                } else if prompt.to_ascii_lowercase().contains("user")
                    || prompt.to_ascii_lowercase().contains("login")
                {
                    username.to_owned()
                } else {
                    String::new()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_first_then_password_then_keyboard_interactive() {
        let mut plan = AuthPlan::new(true, true);
        assert_eq!(plan.next(None), Some(Method::PublicKey));
        let allowed = [Method::Password, Method::KeyboardInteractive];
        assert_eq!(plan.next(Some(&allowed)), Some(Method::Password));
        assert_eq!(plan.next(Some(&allowed)), Some(Method::KeyboardInteractive));
        assert_eq!(plan.next(Some(&allowed)), None);
        assert_eq!(
            plan.tried(),
            ["publickey", "password", "keyboard-interactive"]
        );
    }

    #[test]
    fn methods_the_server_does_not_offer_are_skipped() {
        let mut plan = AuthPlan::new(true, true);
        assert_eq!(
            plan.next(Some(&[Method::KeyboardInteractive])),
            Some(Method::KeyboardInteractive)
        );
        assert_eq!(plan.next(Some(&[Method::KeyboardInteractive])), None);
        assert_eq!(plan.tried(), ["keyboard-interactive"]);
        let mut key_only = AuthPlan::new(true, false);
        assert_eq!(key_only.next(Some(&[Method::Password])), None);
    }

    #[test]
    fn prompts_get_the_password_when_hidden() {
        let answers = answer_prompts(
            [
                ("Password: ", false),
                ("Username: ", true),
                ("Token: ", true),
            ]
            .into_iter(),
            "alice",
            "pw",
        )
        .unwrap();
        assert_eq!(answers, ["pw", "alice", ""]);
        assert!(answer_prompts([].into_iter(), "a", "p").unwrap().is_empty());
        let many = vec![("Password: ", false); MAX_PROMPTS + 1];
        assert!(answer_prompts(many.into_iter(), "a", "p").is_none());
    }
}
