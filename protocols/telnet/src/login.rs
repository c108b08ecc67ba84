//! guacd's Telnet login automation, without I/O: watch what the server prints, say when to
//! send the username and the password, and decide whether the login worked.
//!
//! * `username-regex` (default `[Ll]ogin:`, guacd's) and `password-regex` (default
//!   `[Pp]assword:`) find the prompts; each is answered once, and only when the session has
//!   that credential. The credentials themselves never pass through here: the driver sends
//!   them when told to.
//! * `login-success-regex` and `login-failure-regex` decide the outcome. With a success
//!   regex, the login is not done until it matches; a failure regex that matches first ends
//!   the session. Without either, the login is done once the password has been sent (or, with
//!   no password, the username), as with guacd.
//! * A login that has not finished by its deadline fails: a target that never prompts cannot
//!   hold a session in the login phase.
//!
//! The server's text is matched over a window of the last [`WINDOW`] bytes (output before it
//! is forgotten, so a flood costs bounded memory), with control sequences left in, as guacd
//! matches them. Patterns are at most [`MAX_PATTERN`] bytes and compile to bounded automata.

use std::time::Instant;

use regex::bytes::{Regex, RegexBuilder};
use zt_terminal::SettingsError;

/// The bytes of recent output the regexes see.
pub const WINDOW: usize = 4096;
/// The longest pattern accepted.
pub const MAX_PATTERN: usize = 1024;
/// The most memory one compiled pattern may take.
const PATTERN_MEMORY: usize = 1 << 20;
/// guacd's `username-regex` default.
pub const DEFAULT_USERNAME_REGEX: &str = "[Ll]ogin:";
/// guacd's `password-regex` default.
pub const DEFAULT_PASSWORD_REGEX: &str = "[Pp]assword:";

/// The login's patterns, from the session's parameters.
#[derive(Debug, Clone)]
pub struct LoginSettings {
    username: Regex,
    password: Regex,
    success: Option<Regex>,
    failure: Option<Regex>,
}

impl LoginSettings {
    /// Reads `username-regex`, `password-regex`, `login-success-regex` and
    /// `login-failure-regex` (an empty value is unset, as in guacd). Errors name the
    /// parameter, never its value.
    pub fn from_parameters<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Self, SettingsError> {
        let pattern = |name: &'static str| -> Result<Option<Regex>, SettingsError> {
            match get(name).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) if v.len() > MAX_PATTERN => Err(SettingsError::new(name, "is too long")),
                Some(v) => compile(v)
                    .map(Some)
                    .map_err(|_| SettingsError::new(name, "is not a valid regular expression")),
            }
        };
        Ok(Self {
            username: match pattern("username-regex")? {
                Some(regex) => regex,
                None => compile(DEFAULT_USERNAME_REGEX).map_err(|_| {
                    SettingsError::new("username-regex", "default does not compile")
                })?,
            },
            password: match pattern("password-regex")? {
                Some(regex) => regex,
                None => compile(DEFAULT_PASSWORD_REGEX).map_err(|_| {
                    SettingsError::new("password-regex", "default does not compile")
                })?,
            },
            success: pattern("login-success-regex")?,
            failure: pattern("login-failure-regex")?,
        })
    }
}

fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_MEMORY)
        .dfa_size_limit(PATTERN_MEMORY)
        .build()
}

/// What the driver should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the username and a carriage return.
    SendUsername,
    /// Send the password and a carriage return.
    SendPassword,
    /// The login is done: the session is the user's.
    Succeeded,
    /// The login failed.
    Failed(Failure),
}

/// Why a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `login-failure-regex` matched.
    Refused,
    /// The deadline passed first.
    TimedOut,
}

/// One login in progress.
#[derive(Debug)]
pub struct Login {
    settings: LoginSettings,
    has_username: bool,
    has_password: bool,
    username_sent: bool,
    password_sent: bool,
    done: bool,
    window: Vec<u8>,
    deadline: Instant,
}

impl Login {
    /// A login with `settings`, for a session that has a username and/or a password, that
    /// must be done by `deadline`.
    pub fn new(
        settings: LoginSettings,
        has_username: bool,
        has_password: bool,
        deadline: Instant,
    ) -> Self {
        let mut login = Self {
            settings,
            has_username,
            has_password,
            username_sent: false,
            password_sent: false,
            done: false,
            window: Vec::new(),
            deadline,
        };
        // Nothing to send and nothing to wait for: done from the start.
        login.done = login.automatic_done();
        login
    }

    /// Whether the login is over (succeeded or failed).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the user's keys should wait (a success regex has not matched yet).
    pub fn holds_input(&self) -> bool {
        !self.done && self.settings.success.is_some()
    }

    /// Takes the server's output; the action it calls for, if any.
    pub fn output(&mut self, bytes: &[u8]) -> Option<Action> {
        if self.done {
            return None;
        }
        self.window.extend_from_slice(bytes);
        if self.window.len() > WINDOW {
            let cut = self.window.len() - WINDOW;
            self.window.drain(..cut);
        }
        if let Some(failure) = &self.settings.failure
            && failure.is_match(&self.window)
        {
            self.done = true;
            return Some(Action::Failed(Failure::Refused));
        }
        if let Some(success) = &self.settings.success
            && success.is_match(&self.window)
        {
            self.done = true;
            return Some(Action::Succeeded);
        }
        if self.has_password
            && !self.password_sent
            && let Some(found) = self.settings.password.find(&self.window)
        {
            self.password_sent = true;
            self.window.drain(..found.end());
            return Some(self.after_sending(Action::SendPassword));
        }
        if self.has_username
            && !self.username_sent
            && let Some(found) = self.settings.username.find(&self.window)
        {
            self.username_sent = true;
            self.window.drain(..found.end());
            return Some(self.after_sending(Action::SendUsername));
        }
        None
    }

    /// After a credential is sent: with no outcome regex, the login is done once the last
    /// credential the session has is out.
    fn after_sending(&mut self, action: Action) -> Action {
        self.done = self.automatic_done();
        action
    }

    fn automatic_done(&self) -> bool {
        self.settings.success.is_none()
            && self.settings.failure.is_none()
            && (!self.has_password || self.password_sent)
            && (!self.has_username || self.username_sent || self.has_password)
    }

    /// When [`Self::handle_timeout`] is due, while the login runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.done).then_some(self.deadline)
    }

    /// The deadline passed: the login fails if it is not done.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Action> {
        if self.done || now < self.deadline {
            return None;
        }
        self.done = true;
        Some(Action::Failed(Failure::TimedOut))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<LoginSettings, SettingsError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        LoginSettings::from_parameters(|name| map.get(name).copied())
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[test]
    fn guacd_defaults_answer_login_then_password_once_each() {
        let mut login = Login::new(settings(&[]).unwrap(), true, true, later());
        assert!(!login.holds_input());
        assert_eq!(login.output(b"Debian GNU/Linux 12\r\nhost lo"), None);
        assert_eq!(login.output(b"gin: "), Some(Action::SendUsername));
        assert_eq!(login.output(b"alice\r\n"), None, "the echo is not a prompt");
        assert_eq!(login.output(b"Password: "), Some(Action::SendPassword));
        assert!(login.is_done());
        assert_eq!(login.output(b"login: Password: "), None);
    }

    #[test]
    fn success_and_failure_regexes_decide() {
        let pairs = [
            ("login-success-regex", r"\$ $"),
            ("login-failure-regex", "Login incorrect"),
        ];
        let mut login = Login::new(settings(&pairs).unwrap(), true, true, later());
        assert!(login.holds_input());
        login.output(b"login: ");
        assert_eq!(login.output(b"Password: "), Some(Action::SendPassword));
        assert!(!login.is_done());
        assert_eq!(
            login.output(b"\r\nLogin incorrect\r\nlogin: "),
            Some(Action::Failed(Failure::Refused))
        );
        let mut login = Login::new(settings(&pairs).unwrap(), true, true, later());
        login.output(b"login: ");
        login.output(b"Password: ");
        assert_eq!(login.output(b"\r\nalice@host:~$ "), Some(Action::Succeeded));
        assert!(!login.holds_input());
    }

    #[test]
    fn a_target_that_never_prompts_times_out() {
        let start = Instant::now();
        let mut login = Login::new(settings(&[]).unwrap(), true, true, start);
        assert_eq!(login.poll_timeout(), Some(start));
        assert_eq!(
            login.handle_timeout(start),
            Some(Action::Failed(Failure::TimedOut))
        );
        assert_eq!(login.poll_timeout(), None);
    }

    #[test]
    fn floods_keep_a_bounded_window() {
        let mut login = Login::new(settings(&[]).unwrap(), true, true, later());
        for _ in 0..1000 {
            assert_eq!(login.output(&[b'x'; 10_000]), None);
            assert!(login.window.len() <= WINDOW);
        }
        // A prompt split across outputs still matches.
        login.output(b"log");
        assert_eq!(login.output(b"in:"), Some(Action::SendUsername));
    }

    #[test]
    fn bad_patterns_name_the_parameter_never_the_value() {
        for (name, value) in [
            ("username-regex", "([unclosed"),
            ("login-failure-regex", &"a".repeat(2000)),
            ("password-regex", "(a{1000}){1000}"),
        ] {
            let error = settings(&[(name, value)]).unwrap_err();
            assert_eq!(error.name, name);
            assert!(!error.to_string().contains(value));
        }
    }

    #[test]
    fn without_credentials_nothing_is_sent() {
        let mut login = Login::new(settings(&[]).unwrap(), false, false, later());
        assert!(login.is_done());
        assert_eq!(login.output(b"login: "), None);
        let mut login = Login::new(settings(&[]).unwrap(), true, false, later());
        assert_eq!(login.output(b"Password: "), None);
        assert_eq!(login.output(b"login: "), Some(Action::SendUsername));
        assert!(login.is_done());
    }
}
