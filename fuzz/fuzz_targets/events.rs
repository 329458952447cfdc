//! The Celery event-stream decoder `events::decode`.
//!
//! Two input shapes, chosen by the first byte:
//! - `B` + bytes: the bytes are an event *body* (a JSON object or a `task.multi` array). The
//!   target wraps them the way kombu does (base64 body in a JSON envelope), so the fuzzer
//!   mutates the event JSON directly instead of having to keep base64 valid;
//! - anything else: the whole input is the Redis message (envelope and all).
#![no_main]

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use warden_celery::events;
use warden_core::{EventPayload, FleetEvent};

const MAX_SECONDS: f64 = 1e9;

fn check(event: &FleetEvent) {
    match &event.payload {
        EventPayload::Worker(w) => {
            if let Some(freq) = w.freq {
                assert!(freq.as_secs_f64() < MAX_SECONDS, "{freq:?}");
            }
        }
        EventPayload::Task(t) => {
            if let Some(runtime) = t.runtime {
                assert!(runtime.as_secs_f64() < MAX_SECONDS, "{runtime:?}");
            }
        }
    }
    // Accepted hostnames are well-formed (see `pidbox::valid_node_name`).
    assert!(!event.worker.id.is_empty() && !event.worker.id.chars().any(char::is_control));
    // Everything downstream formats events (logs, metrics labels).
    let _ = format!("{event:?}");
}

fn run(message: &[u8]) {
    let scope: std::sync::Arc<str> = std::sync::Arc::from("default");
    match events::decode(message, &scope) {
        Ok((decoded, errors)) => {
            decoded.iter().for_each(check);
            for err in &errors {
                assert!(!err.reason().is_empty());
                let _ = err.to_string();
            }
        }
        Err(err) => {
            assert!(!err.reason().is_empty());
            let _ = err.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((b'B', body)) => {
            let message = json!({
                "body": BASE64.encode(body),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {"hostname": "w1@h"},
                "properties": {
                    "body_encoding": "base64",
                    "delivery_info": {"exchange": "celeryev", "routing_key": "task.multi"},
                    "delivery_mode": 1,
                    "priority": 0,
                },
            })
            .to_string();
            run(message.as_bytes());
        }
        _ => run(data),
    }
});
