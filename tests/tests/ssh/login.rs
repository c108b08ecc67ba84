//! Logging in with the session's credentials, the host-key pin, and what the user and the
//! audit log hear when it fails.

use zt_api::audit::AuditEvent;
use zt_api::control::{EndReason, Origin, Transport};
use zt_guac::Status;
use zt_tests::servers::SshdOptions;

use super::{Fixture, STEP, TRANSPORTS, events_until_ended, secret_pieces, wait_event};

/// Logs in with `parameters`, types `echo zt-$((6*7))` and Return, and checks that the row
/// after the command shows `zt-42`, that the client received no secret, and what the audit
/// log says about the login.
async fn echo_42(fx: &Fixture, transport: Transport, parameters: &[(String, String)]) -> String {
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (mut term, id, _session) = fx.terminal(transport, parameters).await;
    term.wait_for_prompt().await;
    term.type_text("echo zt-$((6*7))\n").await;
    let lines = term
        .wait_for("zt-42", STEP, |lines| {
            lines
                .windows(2)
                .any(|w| w[0].ends_with("$ echo zt-$((6*7))") && w[1] == "zt-42")
        })
        .await;
    assert!(lines.iter().any(|l| l == "zt-42"));
    term.screenshot(&format!("echo-42-{transport:?}"));
    let received = term.received_text();
    for secret in secret_pieces(parameters) {
        assert!(
            !received.contains(&secret),
            "the client received a secret ({} bytes of it)",
            secret.len()
        );
    }
    let connected = wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::SshConnected { .. })
    })
    .await;
    let AuditEvent::SshConnected {
        host_key_pinned,
        auth_method,
        host_key_fingerprint,
        ..
    } = connected
    else {
        unreachable!()
    };
    assert!(host_key_pinned);
    assert!(host_key_fingerprint.starts_with("SHA256:"));
    fx.api.delete_session(&id).await.unwrap();
    auth_method
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_login_echoes_over_both_transports() {
    let fx = Fixture::start().await;
    for transport in TRANSPORTS {
        let method = echo_42(&fx, transport, &fx.password_login()).await;
        assert_eq!(method, "password", "{transport:?}");
    }
    // The server saw a password login.
    assert!(
        fx.sshd.log().contains(&format!(
            "Accepted password for {} from 127.0.0.1",
            fx.sshd.user
        )),
        "{}",
        fx.sshd.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_logins_ed25519_with_a_passphrase_and_rsa_sha2_512() {
    // Only rsa-sha2-512 (and ed25519) signatures are accepted: an RSA login proves the
    // client signed with SHA-512.
    let fx = Fixture::start_with(
        SshdOptions {
            config: vec!["PubkeyAcceptedAlgorithms ssh-ed25519,rsa-sha2-512".into()],
            ..SshdOptions::default()
        },
        "",
    )
    .await;
    assert_eq!(fx.sshd.extra_keys[0].kind, "rsa");
    for (n, transport) in [(0, Transport::Quic), (1, Transport::Webrtc)] {
        let method = echo_42(&fx, transport, &fx.key_login(n)).await;
        assert_eq!(method, "publickey");
    }
    let log = fx.sshd.log();
    assert!(
        log.contains("Accepted publickey") && log.contains(": RSA SHA256:"),
        "{log}"
    );
    assert!(log.contains(": ED25519 SHA256:"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_interactive_is_answered_from_the_password() {
    // A server that takes only keyboard-interactive (through PAM's password check, as
    // OpenSSH on Debian offers it).
    let fx = Fixture::start_with(
        SshdOptions {
            config: vec![
                "UsePAM yes".into(),
                "PasswordAuthentication no".into(),
                "KbdInteractiveAuthentication yes".into(),
                "AuthenticationMethods keyboard-interactive".into(),
            ],
            ..SshdOptions::default()
        },
        "",
    )
    .await;
    let method = echo_42(&fx, Transport::Quic, &fx.password_login()).await;
    assert_eq!(method, "keyboard-interactive");
}

/// Opens a session that must fail at login; returns the client's errors and the audit events.
async fn failed_login(
    fx: &Fixture,
    parameters: &[(String, String)],
) -> (Vec<(String, u32)>, Vec<AuditEvent>, String) {
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (session, id) = fx.session(Transport::Quic, parameters, None).await;
    let client = zt_tests::guac_client::GuacClient::start(
        &session,
        &zt_tests::guac_client::Handshake {
            size: super::DISPLAY,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut term = super::Term::new(client);
    term.until_closed().await;
    let received = term.received_text();
    for secret in secret_pieces(parameters) {
        assert!(!received.contains(&secret), "the client received a secret");
    }
    (
        term.errors(),
        events_until_ended(&mut events, &id).await,
        id,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pinned_host_key_ends_the_session_before_authentication() {
    let fx = Fixture::start().await;
    let mut parameters = fx.password_login();
    // Another server's key.
    parameters[2].1 =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5NRQoNFwx+UKHFKyLkLT0A1CrB4CwzQkA5qVM7iEEw".into();
    let (errors, events, _) = failed_login(&fx, &parameters).await;
    assert_eq!(
        errors,
        [(
            "The SSH server's host key does not match the pinned key".to_owned(),
            Status::UPSTREAM_UNAVAILABLE.code()
        )]
    );
    let refused = events
        .iter()
        .find_map(|e| match e {
            AuditEvent::SshHostKeyRefused {
                reason,
                host_key_fingerprint,
                ..
            } => Some((reason.clone(), host_key_fingerprint.clone())),
            _ => None,
        })
        .expect("an ssh_host_key_refused event");
    assert_eq!(refused.0, "mismatch");
    assert_eq!(refused.1, host_fingerprint(&fx));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, AuditEvent::SshConnected { .. })),
        "{events:?}"
    );
    let Some(AuditEvent::SessionEnded {
        reason,
        origin,
        detail,
        ..
    }) = events.last()
    else {
        panic!("{events:?}")
    };
    assert_eq!((*reason, *origin), (EndReason::Error, Some(Origin::Target)));
    assert!(detail.as_deref().unwrap_or_default().contains("host key"));
    // The server never saw an authentication attempt.
    let log = fx.sshd.log();
    for attempt in ["Accepted", "Failed", "Postponed", "userauth"] {
        assert!(!log.contains(attempt), "{log}");
    }
}

/// The host key's fingerprint, as `ssh-keygen -l` prints it.
fn host_fingerprint(fx: &Fixture) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.pub");
    std::fs::write(&path, &fx.sshd.host_public_key).unwrap();
    let output = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpinned_target_is_refused_unless_the_proxy_accepts_and_reports_it() {
    let fx = Fixture::start().await;
    let unpinned: Vec<_> = fx.password_login().into_iter().take(2).collect();
    let (errors, events, _) = failed_login(&fx, &unpinned).await;
    assert_eq!(errors[0].1, Status::UPSTREAM_UNAVAILABLE.code());
    assert!(events.iter().any(|e| matches!(
        e,
        AuditEvent::SshHostKeyRefused { reason, .. } if reason == "unpinned"
    )));

    let accepting = Fixture::start_with(
        SshdOptions::default(),
        "[ssh]\ndanger_accept_unpinned_host_keys = true\n",
    )
    .await;
    let unpinned: Vec<_> = accepting.password_login().into_iter().take(2).collect();
    let mut events = accepting.api.events(Some(0)).await.unwrap();
    let (mut term, id, _session) = accepting.terminal(Transport::Quic, &unpinned).await;
    term.wait_for_prompt().await;
    let AuditEvent::SshConnected {
        host_key_pinned,
        host_key_fingerprint,
        host_key_algorithm,
        ..
    } = wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::SshConnected { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(!host_key_pinned);
    assert_eq!(host_key_fingerprint, host_fingerprint(&accepting));
    assert_eq!(host_key_algorithm, "ssh-ed25519");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_ends_the_session_with_a_clear_error() {
    let fx = Fixture::start().await;
    let mut parameters = fx.password_login();
    parameters[1].1 = "not-the-password-$!".into();
    let (errors, events, _) = failed_login(&fx, &parameters).await;
    assert_eq!(
        errors,
        [(
            "SSH authentication failed".to_owned(),
            Status::CLIENT_UNAUTHORIZED.code()
        )]
    );
    let methods = events
        .iter()
        .find_map(|e| match e {
            AuditEvent::SshAuthFailed { methods, .. } => Some(methods.clone()),
            _ => None,
        })
        .expect("an ssh_auth_failed event");
    assert_eq!(methods, ["password"]);
    // No secret in any audit event.
    let json = serde_json::to_string(&events).unwrap();
    assert!(!json.contains("not-the-password") && !json.contains(fx.password()));
    assert!(fx.sshd.log().contains("Failed password for"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_parameters_are_refused_when_the_session_is_created() {
    let fx = Fixture::start().await;
    for (name, value) in [
        ("host-key", "zzz"),
        ("timeout", "soon"),
        ("terminal-type", "x y"),
        ("font-size", "0"),
    ] {
        let mut parameters = fx.password_login();
        parameters.retain(|(n, _)| n != name);
        parameters.push((name.into(), value.into()));
        let request = zt_api::control::CreateSessionRequest {
            transport: Transport::Quic,
            conversation: zt_api::control::Conversation::Connection,
            protocol: Some("ssh".into()),
            target: zt_api::control::Target {
                host: "127.0.0.1".into(),
                port: fx.sshd.port,
            },
            offer: None,
            sealed_offer: None,
            signalling: None,
            parameters: parameters
                .iter()
                .map(|(k, v)| (k.clone(), zt_api::Secret::new(v.clone())))
                .collect(),
            limits: Default::default(),
            route: None,
            recording: None,
            resource_id: None,
            user: None,
        };
        let error = fx.api.create_session(&request).await.unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains(&format!("parameters.{name}")), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_alive_interval_sends_keep_alives_to_the_target() {
    let fx = Fixture::start_with(
        SshdOptions {
            config: vec!["LogLevel DEBUG1".into()],
            ..SshdOptions::default()
        },
        "",
    )
    .await;
    let mut parameters = fx.password_login();
    parameters.push(("server-alive-interval".into(), "1".into()));
    let (mut term, _id, _session) = fx.terminal(Transport::Quic, &parameters).await;
    term.wait_for_prompt().await;
    // OpenSSH logs each keep-alive request it answers.
    zt_tests::wait_until(STEP, "a keep-alive at the server", || async {
        fx.sshd.log().contains("keepalive@openssh.com")
    })
    .await
    .unwrap();
}
