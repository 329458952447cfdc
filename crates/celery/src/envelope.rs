//! kombu's message envelope on Redis: a JSON object whose `body` holds the payload, usually
//! base64-encoded JSON. warden only ever decodes JSON bodies: any other serializer (pickle,
//! yaml, msgpack) is refused before its bytes are looked at.
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Larger envelopes are refused unread. Legitimate messages are far smaller (a `registered`
/// reply of a big app is ~100 KiB, a `task.multi` batch ~50 KiB); the bound matters because
/// parsing multiplies memory (fuzzing found ~170x for a body of many tiny JSON objects).
pub const MAX_ENVELOPE_BYTES: usize = 2 * 1024 * 1024;

/// Why an envelope was refused. Each variant is a metric label (`reason`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("envelope of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("envelope is not a JSON object: {0}")]
    Envelope(String),
    #[error("content type {0:?} is not JSON; refused")]
    ContentType(String),
    #[error("body encoding {0:?} is not supported")]
    BodyEncoding(String),
    #[error("body is not valid base64")]
    Base64,
    #[error("body is not valid JSON: {0}")]
    Body(String),
}

impl DecodeError {
    /// A short, fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge(_) => "too_large",
            DecodeError::Envelope(_) => "envelope",
            DecodeError::ContentType(_) => "content_type",
            DecodeError::BodyEncoding(_) => "body_encoding",
            DecodeError::Base64 => "base64",
            DecodeError::Body(_) => "body",
        }
    }
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    body: std::borrow::Cow<'a, str>,
    #[serde(rename = "content-type", default)]
    content_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    headers: Option<Map<String, Value>>,
    #[serde(default)]
    properties: Option<RawProperties>,
}

#[derive(Deserialize, Default)]
struct RawProperties {
    #[serde(default)]
    body_encoding: Option<String>,
    #[serde(default)]
    delivery_info: Option<DeliveryInfo>,
}

/// Where a message was routed.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct DeliveryInfo {
    #[serde(default)]
    pub exchange: String,
    #[serde(default)]
    pub routing_key: String,
}

/// A decoded message: headers, routing and the JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub headers: Map<String, Value>,
    pub delivery_info: DeliveryInfo,
    pub body: Value,
}

/// The content types kombu's JSON serializer writes.
fn is_json(content_type: &str) -> bool {
    matches!(
        content_type.trim().to_ascii_lowercase().as_str(),
        "application/json" | "application/x-json"
    )
}

/// Decodes one envelope. Never panics, whatever the input.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    let raw = decode_raw(bytes)?;
    let body = decode_body(&raw)?;
    let properties = raw.properties.unwrap_or_default();
    Ok(Envelope {
        headers: raw.headers.unwrap_or_default(),
        delivery_info: properties.delivery_info.unwrap_or_default(),
        body: serde_json::from_slice(&body).map_err(|e| DecodeError::Body(e.to_string()))?,
    })
}

/// Decodes an envelope's body into a caller's type, skipping the generic JSON tree (the hot
/// path of event ingestion).
pub fn decode_typed<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<(DeliveryInfo, T), DecodeError> {
    let raw = decode_raw(bytes)?;
    let body = decode_body(&raw)?;
    let value = serde_json::from_slice(&body).map_err(|e| DecodeError::Body(e.to_string()))?;
    let properties = raw.properties.unwrap_or_default();
    Ok((properties.delivery_info.unwrap_or_default(), value))
}

/// Decodes an envelope down to its raw body bytes (for callers that parse the body themselves).
pub fn decode_body_bytes(bytes: &[u8]) -> Result<(DeliveryInfo, Vec<u8>), DecodeError> {
    let raw = decode_raw(bytes)?;
    let body = decode_body(&raw)?;
    let properties = raw.properties.unwrap_or_default();
    Ok((properties.delivery_info.unwrap_or_default(), body))
}

fn decode_raw(bytes: &[u8]) -> Result<RawEnvelope<'_>, DecodeError> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let raw: RawEnvelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Envelope(e.to_string()))?;
    let content_type = raw.content_type.as_deref().unwrap_or("application/json");
    if !is_json(content_type) {
        return Err(DecodeError::ContentType(
            content_type.chars().take(64).collect(),
        ));
    }
    Ok(raw)
}

fn decode_body(raw: &RawEnvelope<'_>) -> Result<Vec<u8>, DecodeError> {
    let encoding = raw
        .properties
        .as_ref()
        .and_then(|p| p.body_encoding.as_deref())
        .unwrap_or("base64");
    match encoding {
        "base64" => BASE64
            .decode(raw.body.as_bytes())
            .map_err(|_| DecodeError::Base64),
        "utf-8" | "utf8" => Ok(raw.body.as_bytes().to_vec()),
        other => Err(DecodeError::BodyEncoding(other.chars().take(32).collect())),
    }
}

/// Builds an envelope the way kombu writes it (JSON body, base64-encoded).
pub fn encode(
    body: &Value,
    headers: Value,
    exchange: &str,
    routing_key: &str,
    delivery_mode: u8,
) -> String {
    let body = BASE64.encode(body.to_string());
    json!({
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "delivery_mode": delivery_mode,
            "delivery_info": {"exchange": exchange, "routing_key": routing_key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid::Uuid::new_v4().to_string(),
        },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        encode(
            &json!({"w1@h": {"ok": "pong"}}),
            json!({"ticket": "t1", "clock": 3}),
            "reply.celery.pidbox",
            "rk",
            1,
        )
    }

    #[test]
    fn round_trips() {
        let env = decode(sample().as_bytes()).unwrap();
        assert_eq!(env.body, json!({"w1@h": {"ok": "pong"}}));
        assert_eq!(env.headers["ticket"], "t1");
        assert_eq!(env.delivery_info.exchange, "reply.celery.pidbox");
    }

    #[test]
    fn refuses_non_json_content_types_unread() {
        for ct in [
            "application/x-python-serialize",
            "application/x-yaml",
            "application/x-msgpack",
        ] {
            let text = sample().replace("application/json", ct);
            assert_eq!(
                decode(text.as_bytes()).unwrap_err().reason(),
                "content_type"
            );
        }
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        let good = sample();
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"{".to_vec(),
            b"[]".to_vec(),
            b"null".to_vec(),
            b"{\"body\": 5}".to_vec(),
            good.as_bytes()[..good.len() / 2].to_vec(),
            good.replace("\"body\":\"", "\"body\":\"!!").into_bytes(),
            br#"{"body":"e30=","properties":{"body_encoding":"rot13"}}"#.to_vec(),
            br#"{"body":"bm90IGpzb24=","content-type":"application/json"}"#.to_vec(),
            vec![0xff, 0xfe, 0x00],
            format!("{{\"body\":\"{}\"}}", "A".repeat(MAX_ENVELOPE_BYTES)).into_bytes(),
        ];
        for case in cases {
            assert!(
                decode(&case).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(&case[..case.len().min(80)])
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        // In the body, base64-encoded...
        let body = BASE64.encode(deep(100_000));
        let text = format!(r#"{{"body":"{body}","content-type":"application/json"}}"#);
        assert_eq!(decode(text.as_bytes()).unwrap_err().reason(), "body");
        assert!(decode_typed::<Value>(text.as_bytes()).is_err());
        // ...or in the envelope itself.
        let text = format!(r#"{{"body":"e30=","headers":{{"x":{}}}}}"#, deep(100_000));
        assert_eq!(decode(text.as_bytes()).unwrap_err().reason(), "envelope");
        // Nesting that real replies use is fine.
        let body = BASE64.encode(format!(r#"{{"w@h":{}}}"#, deep(32)));
        let text = format!(r#"{{"body":"{body}"}}"#);
        assert!(decode(text.as_bytes()).is_ok());
    }

    #[test]
    fn bodies_that_are_not_utf8_json_are_refused() {
        for raw in [
            &[0xff, 0xfe, b'{', b'}'][..],
            b"{\"a\":\"\xc3\x28\"}",
            b"\"unterminated",
        ] {
            let text = format!(r#"{{"body":"{}"}}"#, BASE64.encode(raw));
            assert_eq!(decode(text.as_bytes()).unwrap_err().reason(), "body");
        }
        for body in ["5", "null", "{}", "[\"e30=\"]", "true"] {
            let text = format!(r#"{{"body":{body}}}"#);
            assert_eq!(decode(text.as_bytes()).unwrap_err().reason(), "envelope");
        }
    }

    #[test]
    fn content_types_are_matched_exactly_up_to_case_and_blanks() {
        for ct in [
            "application/json",
            "Application/JSON",
            " application/x-json ",
        ] {
            let text = sample().replace("application/json", ct);
            assert!(decode(text.as_bytes()).is_ok(), "{ct}");
        }
        for ct in [
            "application/json; charset=binary",
            "text/plain",
            "",
            "application/data",
        ] {
            let text = sample().replace("application/json", ct);
            assert_eq!(
                decode(text.as_bytes()).unwrap_err().reason(),
                "content_type",
                "{ct}"
            );
        }
        // The refused type is echoed only in part, so a huge header cannot flood logs.
        let text = sample().replace("application/json", &"x".repeat(10_000));
        match decode(text.as_bytes()).unwrap_err() {
            DecodeError::ContentType(shown) => assert_eq!(shown.len(), 64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn utf8_bodies_are_accepted() {
        let text = r#"{"body":"{\"a\":1}","content-type":"application/json","properties":{"body_encoding":"utf-8"}}"#;
        assert_eq!(decode(text.as_bytes()).unwrap().body, json!({"a": 1}));
    }
}
