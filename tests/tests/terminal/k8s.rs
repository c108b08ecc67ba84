//! Native Kubernetes: exec into a pod's container through an API-server peer
//! (`zt_tests::k8s_api`: TLS with client-certificate checking, the exec upgrade and channel
//! framing, resize, the status stream) whose exec runs a real `/bin/sh` on a pty here.

use zt_api::audit::AuditEvent;
use zt_api::control::Transport;
use zt_guac::{Instruction, opcode};
use zt_tests::guac_client::{GuacClient, Handshake};
use zt_tests::k8s_api::{ApiServer, ApiServerOptions, Pod};
use zt_tests::term::{DISPLAY, Term};

use super::{Proxy, TRANSPORTS, events_until_ended, grid};

/// guacd-style parameters for `server`'s pod `web-0`, with TLS pinned to its CA and the
/// client certificate.
fn with_certificate(server: &ApiServer) -> Vec<(&'static str, String)> {
    vec![
        ("pod", "web-0".to_owned()),
        ("container", "app".to_owned()),
        ("use-ssl", "true".to_owned()),
        ("ca-cert", server.pki.ca_pem.clone()),
        ("client-cert", server.pki.client_cert_pem.clone()),
        ("client-key", server.pki.client_key_pem.clone()),
    ]
}

fn pairs<'a>(parameters: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    parameters.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The base64 body of a PEM block: what would betray it in any text.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .take(2)
        .collect::<Vec<_>>()
        .join("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_in_the_pod_runs_follows_the_size_and_reports_its_exit_status() {
    let server = ApiServer::start(ApiServerOptions::default()).await.unwrap();
    let fx = Proxy::start();
    for transport in TRANSPORTS {
        let mut events = fx.api.events(Some(0)).await.unwrap();
        let parameters = with_certificate(&server);
        let (session, id) = fx
            .session(
                transport,
                "kubernetes",
                server.port,
                &pairs(&parameters),
                None,
            )
            .await;
        let mut term = Term::connect_to(&session, "kubernetes").await;
        term.wait_for_prompt().await;
        term.run("echo zt-$((6*7))", "zt-42").await;
        // The process started at the client's size, and follows its `size`.
        let (rows, cols) = grid(DISPLAY.0, DISPLAY.1);
        term.run("stty size", &format!("{rows} {cols}")).await;
        term.client
            .send(&Instruction::new(opcode::SIZE, &["1000", "300"]))
            .await
            .unwrap();
        let (rows, cols) = grid(1000, 300);
        term.run("stty size", &format!("{rows} {cols}")).await;
        term.type_text("exit 3\n").await;
        term.until_closed().await;
        term.screenshot(&format!("kubernetes-{transport:?}"));
        // The exit status is on the screen...
        assert!(
            term.lines().iter().any(|l| l == "[exited with status 3]"),
            "{:?}",
            term.lines()
        );
        // ...and the key never reached the client.
        let received = term.received_text();
        assert!(!received.contains(&pem_body(&server.pki.client_key_pem)));
        assert!(!received.contains("PRIVATE KEY"));

        let events = events_until_ended(&mut events, &id).await;
        let connected = events
            .iter()
            .find_map(|e| match e {
                AuditEvent::K8sConnected {
                    call,
                    pod,
                    container,
                    protocol,
                    tls,
                    credentials,
                    ..
                } => Some((
                    call.clone(),
                    pod.clone(),
                    container.clone(),
                    protocol.clone(),
                    tls.clone(),
                    credentials.clone(),
                )),
                _ => None,
            })
            .expect("k8s_connected");
        assert_eq!(
            connected,
            (
                "exec".to_owned(),
                "web-0".to_owned(),
                Some("app".to_owned()),
                "v5.channel.k8s.io".to_owned(),
                "ca_cert".to_owned(),
                "client_certificate".to_owned()
            )
        );
        let ended = events
            .iter()
            .find_map(|e| match e {
                AuditEvent::K8sDisconnected {
                    reason,
                    exit_status,
                    bytes_to_target,
                    ..
                } => Some((reason.clone(), *exit_status, *bytes_to_target)),
                _ => None,
            })
            .expect("k8s_disconnected");
        assert_eq!(
            (ended.0.as_str(), ended.1),
            ("exited", Some(3)),
            "{transport:?}"
        );
        assert!(ended.2 >= "echo zt-$((6*7))\rstty size\rstty size\rexit 3\r".len() as u64);
        let log = serde_json::to_string(&events).unwrap();
        assert!(!log.contains(&pem_body(&server.pki.client_key_pem)));
        drop(session);
    }
    // What the API server was asked: the shell, in container `app`, with a tty, by the
    // client certificate.
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for request in requests {
        assert_eq!(
            request.uri,
            "/api/v1/namespaces/default/pods/web-0/exec?command=%2Fbin%2Fsh&container=app&stdin=true&stdout=true&tty=true"
        );
        assert!(request.client_certificate);
        assert_eq!(request.status, 101);
        assert_eq!(
            request
                .headers
                .get("sec-websocket-protocol")
                .map(String::as_str),
            Some("v5.channel.k8s.io, v4.channel.k8s.io")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_opens_a_v4_exec_with_ignore_cert_and_never_reaches_the_client() {
    const TOKEN: &str = "zt-token.eyJzdWIiOiJ6dC1hZG1pbiJ9.c2lnbmF0dXJl";
    let server = ApiServer::start(ApiServerOptions {
        token: Some(TOKEN.to_owned()),
        // A server before Kubernetes 1.30.
        protocols: vec!["v4.channel.k8s.io"],
        ..ApiServerOptions::default()
    })
    .await
    .unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let parameters = vec![
        ("pod", "web-0".to_owned()),
        ("use-ssl", "true".to_owned()),
        ("ignore-cert", "true".to_owned()),
        ("bearer-token", TOKEN.to_owned()),
        ("exec-command", " /bin/sh  -i ".to_owned()),
    ];
    let (session, id) = fx
        .session(
            Transport::Webrtc,
            "kubernetes",
            server.port,
            &pairs(&parameters),
            None,
        )
        .await;
    let mut term = Term::connect_to(&session, "kubernetes").await;
    term.wait_for_prompt().await;
    term.run("echo zt-$((6*7))", "zt-42").await;
    term.type_text("exit\n").await;
    term.until_closed().await;
    assert!(!term.received_text().contains(TOKEN));
    assert!(
        !term.lines().iter().any(|l| l.starts_with("[exited")),
        "{:?}",
        term.lines()
    );
    let events = events_until_ended(&mut events, &id).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            AuditEvent::K8sConnected { protocol, credentials, tls, .. }
                if protocol == "v4.channel.k8s.io" && credentials == "bearer_token"
                    && tls == "unverified"
        )),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            AuditEvent::K8sDisconnected { reason, exit_status: Some(0), .. } if reason == "exited"
        )),
        "{events:?}"
    );
    assert!(!serde_json::to_string(&events).unwrap().contains(TOKEN));
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    // The token went to the API server (and matched); exec-command was split on whitespace,
    // one `command=` per word, as guacd after 1.6 splits it.
    assert_eq!(
        requests[0].headers.get("authorization").map(String::as_str),
        Some("<masked>")
    );
    assert!(
        requests[0].uri.contains(
            "/api/v1/namespaces/default/pods/web-0/exec?command=%2Fbin%2Fsh&command=-i&stdin=true"
        ),
        "{}",
        requests[0].uri
    );
    assert!(!requests[0].client_certificate);
}

/// Opens a session with `parameters` against `server`, and returns what the client was told
/// and the session's end detail.
async fn refused(
    fx: &Proxy,
    server: &ApiServer,
    parameters: &[(&'static str, String)],
) -> ((String, u32), String) {
    refused_over(Transport::Quic, fx, server, parameters).await
}

/// [`refused`] over `transport`.
async fn refused_over(
    transport: Transport,
    fx: &Proxy,
    server: &ApiServer,
    parameters: &[(&'static str, String)],
) -> ((String, u32), String) {
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (session, id) = fx
        .session(
            transport,
            "kubernetes",
            server.port,
            &pairs(parameters),
            None,
        )
        .await;
    // A session refused before its display starts never sends `ready`.
    let handshake = Handshake {
        select: "kubernetes".into(),
        size: DISPLAY,
        ..Handshake::default()
    };
    let mut term = match GuacClient::start(&session, &handshake).await {
        Ok(client) => Term::new(client),
        Err(error) => panic!("{error:#}\n{}", fx.proxy.output()),
    };
    term.until_closed().await;
    let errors = term.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let received = term.received_text();
    for (name, value) in parameters {
        if ["client-key", "bearer-token"].contains(name) {
            assert!(
                !received.contains(&pem_body(value)),
                "{name} reached the client"
            );
        }
    }
    let events = events_until_ended(&mut events, &id).await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, AuditEvent::K8sConnected { .. })),
        "{events:?}"
    );
    let detail = events
        .iter()
        .find_map(|e| match e {
            AuditEvent::SessionEnded { detail, .. } => detail.clone(),
            _ => None,
        })
        .unwrap_or_default();
    drop(session);
    (errors[0].clone(), detail)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_a_wrong_client_certificate_and_a_missing_pod_end_the_session_with_the_reason() {
    let server = ApiServer::start(ApiServerOptions {
        pods: vec![
            Pod::running("web-0"),
            Pod {
                namespace: "default".into(),
                name: "crashing-0".into(),
                containers: vec![("app".into(), false)],
            },
        ],
        ..ApiServerOptions::default()
    })
    .await
    .unwrap();
    let fx = Proxy::start();
    let base = with_certificate(&server);
    let with = |changes: &[(&'static str, &str)]| {
        let mut parameters = base.clone();
        for (name, value) in changes {
            parameters.retain(|(n, _)| n != name);
            parameters.push((name, (*value).to_owned()));
        }
        parameters
    };

    for transport in TRANSPORTS {
        // A CA that did not sign the server's certificate: refused before any credential.
        let ((message, status), detail) = refused_over(
            transport,
            &fx,
            &server,
            &with(&[("ca-cert", &server.pki.other_ca_pem)]),
        )
        .await;
        assert!(
            message.starts_with("the Kubernetes API server's certificate was refused"),
            "{message}"
        );
        assert!(message.contains("UnknownIssuer"), "{message}");
        assert_eq!(status, zt_guac::Status::UPSTREAM_ERROR.code());
        assert!(detail.contains("certificate was refused"), "{detail}");

        // A client certificate from a CA the server does not trust: the server's TLS alert.
        let ((message, _), _) = refused_over(
            transport,
            &fx,
            &server,
            &with(&[
                ("client-cert", &server.pki.stranger_cert_pem),
                ("client-key", &server.pki.stranger_key_pem),
            ]),
        )
        .await;
        assert!(
            message.starts_with("the Kubernetes API server refused the TLS connection"),
            "{message}"
        );

        // A pod that does not exist: 404 with the server's reason.
        let ((message, status), detail) =
            refused_over(transport, &fx, &server, &with(&[("pod", "nope-0")])).await;
        assert_eq!(
            message,
            "the Kubernetes API server refused (404): pods \"nope-0\" not found"
        );
        assert_eq!(status, zt_guac::Status::RESOURCE_NOT_FOUND.code());
        assert!(detail.contains("pods \"nope-0\" not found"), "{detail}");
    }

    // No credential at all: 401, in the server's words.
    let no_credentials: Vec<_> = base
        .iter()
        .filter(|(n, _)| !["client-cert", "client-key"].contains(n))
        .cloned()
        .collect();
    let ((message, status), _) = refused(&fx, &server, &no_credentials).await;
    assert_eq!(
        message,
        "the Kubernetes API server refused (401): Unauthorized"
    );
    assert_eq!(status, zt_guac::Status::CLIENT_UNAUTHORIZED.code());

    // A container the pod does not have: 400.
    let ((message, _), _) = refused(&fx, &server, &with(&[("container", "db")])).await;
    assert_eq!(
        message,
        "the Kubernetes API server refused (400): container db is not valid for pod web-0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_is_not_running_and_a_server_without_the_subprotocols_are_explained() {
    let server = ApiServer::start(ApiServerOptions {
        pods: vec![Pod {
            namespace: "default".into(),
            name: "crashing-0".into(),
            containers: vec![("app".into(), false)],
        }],
        ..ApiServerOptions::default()
    })
    .await
    .unwrap();
    let fx = Proxy::start();
    let mut parameters = with_certificate(&server);
    parameters.retain(|(n, _)| *n != "pod");
    parameters.push(("pod", "crashing-0".to_owned()));
    // Under v5 the upgrade succeeds and the status stream says why nothing runs.
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (session, id) = fx
        .session(
            Transport::Quic,
            "kubernetes",
            server.port,
            &pairs(&parameters),
            None,
        )
        .await;
    let mut term = Term::connect_to(&session, "kubernetes").await;
    term.until_closed().await;
    let errors = term.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .0
            .starts_with("the Kubernetes API server reports InternalError:")
            && errors[0].0.contains("container not found (\"app\")"),
        "{errors:?}"
    );
    // The user sees it on the terminal too.
    assert!(
        term.lines()
            .iter()
            .any(|l| l.contains("container not found")),
        "{:?}",
        term.lines()
    );
    let events = events_until_ended(&mut events, &id).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            AuditEvent::K8sDisconnected { reason, detail: Some(detail), exit_status: None, .. }
                if reason == "error" && detail.contains("container not found")
        )),
        "{events:?}"
    );
    drop(session);

    // A server that speaks neither v5 nor v4 answers a bare 403.
    let old = ApiServer::start(ApiServerOptions {
        protocols: vec!["channel.k8s.io"],
        ..ApiServerOptions::default()
    })
    .await
    .unwrap();
    let ((message, status), _) = refused(&fx, &old, &with_certificate(&old)).await;
    assert!(
        message.contains("supports neither v5.channel.k8s.io nor v4.channel.k8s.io"),
        "{message}"
    );
    assert_eq!(status, zt_guac::Status::CLIENT_FORBIDDEN.code());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_holds_the_session_and_read_only_keeps_the_keys_from_the_pod() {
    let server = ApiServer::start(ApiServerOptions::default()).await.unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let mut parameters = with_certificate(&server);
    parameters.push(("recording-include-keys", "true".to_owned()));
    let (session, id) = fx
        .session(
            Transport::Quic,
            "kubernetes",
            server.port,
            &pairs(&parameters),
            Some(super::typescript()),
        )
        .await;
    let mut term = Term::connect_to(&session, "kubernetes").await;
    term.wait_for_prompt().await;
    term.run("echo zt-$((6*7))", "zt-42").await;
    term.client
        .send(&Instruction::new(opcode::SIZE, &["1000", "300"]))
        .await
        .unwrap();
    let (rows, cols) = grid(1000, 300);
    term.run("stty size", &format!("{rows} {cols}")).await;
    term.type_text("exit 3\n").await;
    term.until_closed().await;
    let (events, files) = fx.ended_recordings(&mut events, &id).await;
    assert_eq!(files.len(), 1, "{files:?}");
    let cast = std::fs::read_to_string(fx.export(&files[0], "asciicast")).unwrap();
    let of_kind = |kind: &str| -> String {
        cast.lines()
            .skip(1)
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event[1] == kind)
            .filter_map(|event| event[2].as_str().map(str::to_owned))
            .collect()
    };
    let (typed, shown, resized) = (of_kind("i"), of_kind("o"), of_kind("r"));
    assert!(typed.contains("echo zt-$((6*7))\r"), "{typed:?}");
    assert!(shown.contains("\r\nzt-42\r\n"), "{shown:?}");
    assert!(resized.contains(&format!("{cols}x{rows}")), "{resized:?}");
    assert!(!cast.contains(&pem_body(&server.pki.client_key_pem)));
    assert!(
        events.iter().any(|e| matches!(
            e,
            AuditEvent::K8sDisconnected {
                exit_status: Some(3),
                ..
            }
        )),
        "{events:?}"
    );
    drop(session);

    // `read-only`: the user sees the shell, and nothing typed reaches it.
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let mut parameters = with_certificate(&server);
    parameters.push(("read-only", "true".to_owned()));
    let (session, id) = fx
        .session(
            Transport::Quic,
            "kubernetes",
            server.port,
            &pairs(&parameters),
            None,
        )
        .await;
    let mut term = Term::connect_to(&session, "kubernetes").await;
    term.wait_for_prompt().await;
    term.type_text("echo typed\n").await;
    term.client
        .send(&Instruction::new(opcode::DISCONNECT, &[] as &[&str]))
        .await
        .unwrap();
    term.until_closed().await;
    assert!(
        !term.lines().iter().any(|l| l.contains("typed")),
        "{:?}",
        term.lines()
    );
    let events = events_until_ended(&mut events, &id).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            AuditEvent::K8sDisconnected { reason, bytes_to_target: 0, .. } if reason == "client_closed"
        )),
        "{events:?}"
    );
    drop(session);
}
