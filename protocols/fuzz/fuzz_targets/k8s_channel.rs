//! A hostile Kubernetes API server: its WebSocket messages (each read as a remote-command
//! frame, status parts collected and parsed), a refused upgrade's body, and names and a
//! command from a session. No panic; status bounded; paths only for valid names.

#![no_main]

use zt_k8s::channel::{self, Incoming, Protocol, StatusBuffer};
use zt_k8s::request::{self, Call, Target};
use zt_k8s::status;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let protocol = if first & 1 == 0 { Protocol::V5 } else { Protocol::V4 };
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
        assert!(!route.contains("..") && route.matches('/').count() == 7, "{route}");
    }
});
