//! The kombu envelope decoders: `envelope::decode`, `decode_body_bytes` and `decode_typed`,
//! on arbitrary bytes. Besides "never panics", it checks that the three entry points agree
//! with one another and that an accepted envelope survives `encode` → `decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use warden_celery::envelope::{self, DecodeError};

fn check_reason(err: &DecodeError) {
    assert!(!err.reason().is_empty());
    // Display must not panic either (it is logged).
    let _ = err.to_string();
}

fuzz_target!(|data: &[u8]| {
    let full = envelope::decode(data);
    let raw = envelope::decode_body_bytes(data);
    let typed = envelope::decode_typed::<Value>(data);

    if let Err(err) = &full {
        check_reason(err);
    }
    if let Err(err) = &raw {
        check_reason(err);
    }
    if let Err(err) = &typed {
        check_reason(err);
    }

    match (&full, &raw) {
        (Ok(env), Ok((info, body))) => {
            // Same routing, and the raw body is the JSON that `decode` parsed.
            assert_eq!(&env.delivery_info, info);
            assert!(serde_json::from_slice::<Value>(body).is_ok());
        }
        (Err(err), Ok((_, body))) => {
            // Past the envelope, `decode` can only fail on the body's JSON.
            assert_eq!(err.reason(), "body", "{err}");
            assert!(serde_json::from_slice::<Value>(body).is_err());
        }
        (Ok(_), Err(err)) => panic!("decode accepted what decode_body_bytes refused: {err}"),
        (Err(a), Err(b)) => assert_eq!(a, b),
    }
    match (&full, &typed) {
        (Ok(env), Ok((info, _))) => assert_eq!(&env.delivery_info, info),
        (Err(a), Err(b)) => assert_eq!(a.reason(), b.reason()),
        _ => panic!("decode and decode_typed::<Value> disagree: {full:?} / {typed:?}"),
    }

    // What warden accepted, warden can write back and read again.
    if let Ok(env) = full {
        let again = envelope::encode(
            &env.body,
            Value::Object(env.headers.clone()),
            &env.delivery_info.exchange,
            &env.delivery_info.routing_key,
            2,
        );
        let back = envelope::decode(again.as_bytes()).expect("re-encoded envelope refused");
        assert_eq!(back.delivery_info, env.delivery_info);
        assert_eq!(back.headers.len(), env.headers.len());
    }
});
