//! A hostile Kubernetes API server: its WebSocket messages (each read as a remote-command
//! frame, status parts collected and parsed), a refused upgrade's body, and names, a
//! command and the whole parameter set (PEM included) from a session. No panic; status
//! bounded; paths only for valid names, and every accepted parameter set makes a path.

#![no_main]

use zt_k8s::channel::{self, Incoming, Protocol, StatusBuffer};
use zt_k8s::request::{self, Call, Target};
use zt_k8s::status;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let protocol = if first & 1 == 0 {
        Protocol::V5
    } else {
        Protocol::V4
    };
    // Messages separated by 0xFE.
    let mut status_parts = StatusBuffer::default();
    for message in rest.split(|&b| b == 0xFE) {
        if let Ok(Incoming::Status(part)) = channel::decode(protocol, message) {
            if status_parts.push(part).is_err() {
                break;
            }
        }
    }
    if let Some(json) = status_parts.take() {
        let _ = status::outcome(&json);
    }
    let _ = status::refusal(u16::from(first) * 3, rest);

    // Names and a command from the same bytes.
    let text = String::from_utf8_lossy(rest);
    let mut fields = text.split('\u{0}');
    let target = Target {
        namespace: fields.next().unwrap_or_default().to_owned(),
        pod: fields.next().unwrap_or_default().to_owned(),
        container: fields.next().map(str::to_owned),
    };
    let argv: Vec<String> = fields.map(str::to_owned).collect();
    if let Ok(path) = request::path_and_query(&target, &Call::Exec(argv)) {
        assert!(path.starts_with("/api/v1/namespaces/"));
        assert_eq!(path.matches('?').count(), 1);
        let (route, _) = path.split_once('?').unwrap_or_default();
        assert!(
            !route.contains("..") && route.matches('/').count() == 7,
            "{route}"
        );
    }

    // A session's parameters from the same bytes: guacd's names, values split at 0x01.
    const NAMES: [&str; 12] = [
        "namespace",
        "pod",
        "container",
        "exec-command",
        "attach",
        "use-ssl",
        "client-cert",
        "client-key",
        "ca-cert",
        "ignore-cert",
        "bearer-token",
        "font-size",
    ];
    let values: Vec<&str> = text.split('\u{1}').collect();
    let get = |name: &str| {
        NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i).copied())
    };
    if let Ok(settings) = zt_k8s::K8sSettings::from_parameters(get) {
        let path = request::path_and_query(&settings.target, &settings.call);
        assert!(path.is_ok_and(|p| p.starts_with("/api/v1/namespaces/")));
    }
});
