//! Autofill: the session's username and password typed into the page by ztproxy, so the
//! user never sees or types them.
//!
//! When a page of the top frame has loaded, the first `autofill-configuration` rule whose
//! `page` patterns match its URL says which fields to fill and what to click; without rules
//! every page the policy allows is filled with the default selectors, never submitted.
//! The script sets each field's value as typing would (the native setter, then `input` and
//! `change` events), so frameworks see it.
//!
//! The password field stays masked: it is filled only when it is `type=password`, it gets
//! `-webkit-text-security: disc`, and an observer puts `type=password` back if the page
//! changes it (a "show password" button), so its characters never reach the screencast.
//! The credentials are in the script only, which lives in a [`Secret`] until it is sent to
//! the browser, and never in a log, the audit or a recording.

use zt_secret::Secret;

use crate::settings::{DEFAULT_PASSWORD_FIELD, DEFAULT_USERNAME_FIELD, RbiSettings};

/// The script that fills the page at `url`, if anything should be filled there. It returns
/// `{filled: n, submitted: bool}`.
pub fn script(settings: &RbiSettings, url: &str) -> Option<Secret<String>> {
    if settings.username.is_none() && settings.password.is_none() {
        return None;
    }
    let (username_field, password_field, submit) = if settings.autofill.is_empty() {
        if !url.starts_with("http") {
            return None;
        }
        (
            Some(DEFAULT_USERNAME_FIELD.to_owned()),
            Some(DEFAULT_PASSWORD_FIELD.to_owned()),
            None,
        )
    } else {
        let rule = settings.autofill.iter().find(|r| r.page.allows(url))?;
        (
            rule.username_field.clone(),
            rule.password_field.clone(),
            rule.submit.clone(),
        )
    };
    let json = |v: Option<&str>| serde_json::to_string(&v).unwrap_or_else(|_| "null".to_owned());
    let username = settings
        .username
        .as_ref()
        .map(|s| s.expose_secret().as_str());
    let password = settings
        .password
        .as_ref()
        .map(|s| s.expose_secret().as_str());
    Some(Secret::new(format!(
        r#"(() => {{
  const u = {username}, p = {password}, uf = {username_field}, pf = {password_field}, s = {submit};
  const set = (e, v) => {{
    Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value").set.call(e, v);
    e.dispatchEvent(new Event("input", {{ bubbles: true }}));
    e.dispatchEvent(new Event("change", {{ bubbles: true }}));
  }};
  let filled = 0;
  let pw = null;
  try {{ pw = pf ? document.querySelector(pf) : null; }} catch (_) {{}}
  if (pw && !(pw instanceof HTMLInputElement && pw.type === "password")) pw = null;
  if (pw && p !== null) {{
    pw.style.setProperty("-webkit-text-security", "disc", "important");
    new MutationObserver(() => {{ if (pw.type !== "password") pw.type = "password"; }})
      .observe(pw, {{ attributes: true, attributeFilter: ["type"] }});
    set(pw, p);
    filled++;
  }}
  if (uf && u !== null) {{
    let found = [];
    try {{ found = [...document.querySelectorAll(uf)]; }} catch (_) {{}}
    const fields = found.filter(e => e instanceof HTMLInputElement && e !== pw
      && !["password", "hidden", "submit", "button", "checkbox", "radio"].includes(e.type));
    const before = fields.find(e => !pw || (e.compareDocumentPosition(pw) & Node.DOCUMENT_POSITION_FOLLOWING));
    const field = before || fields[0];
    if (field) {{ set(field, u); filled++; }}
  }}
  let submitted = false;
  if (filled && s) {{
    let button = null;
    try {{ button = document.querySelector(s); }} catch (_) {{}}
    if (button) {{ button.click(); submitted = true; }}
  }}
  return {{ filled, submitted }};
}})()"#,
        username = json(username),
        password = json(password),
        username_field = json(username_field.as_deref()),
        password_field = json(password_field.as_deref()),
        submit = json(submit.as_deref()),
    )))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> RbiSettings {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        RbiSettings::from_parameters(|name| map.get(name).copied(), "127.0.0.1", 8080).unwrap()
    }

    #[test]
    fn rules_choose_the_page_and_values_are_json_escaped() {
        let s = settings(&[
            ("username", "al\"ice"),
            ("password", "p</script>\"\\x"),
            (
                "autofill-configuration",
                r##"[{"page":"http://127.0.0.1:8080/login*","password-field":"#p","submit":"#go"}]"##,
            ),
        ]);
        assert!(script(&s, "http://127.0.0.1:8080/other").is_none());
        let js = script(&s, "http://127.0.0.1:8080/login?next=1").unwrap();
        let js = js.expose_secret();
        assert!(js.contains(r#"p = "p</script>\"\\x""#), "{js}");
        assert!(js.contains(r##"s = "#go""##));
        assert!(js.contains("uf = null"));
        // Without credentials nothing is filled.
        assert!(script(&settings(&[]), "http://127.0.0.1:8080/login").is_none());
        // Without rules, the defaults, never submitted.
        let js = script(&settings(&[("password", "x")]), "http://127.0.0.1:8080/").unwrap();
        assert!(js.expose_secret().contains("s = null"));
    }
}
