//! The Kafka source's dead-letter headers: the original headers other than `weir.error.*` come
//! first, unchanged and in order, then each `weir.error.*` header exactly once, saying where the
//! message came from and why.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_runtime::connectors::kafka::source::{dead_letter_headers, RawMessage, ERROR_PREFIX};

fuzz_target!(|data: &[u8]| {
    // Layout: partition (4 bytes), offset (8), then `\0`-separated parts: topic, reason, node,
    // then header name/value pairs (a value starting with 0xff is absent).
    if data.len() < 12 {
        return;
    }
    let partition = i32::from_le_bytes(data[..4].try_into().unwrap());
    let offset = i64::from_le_bytes(data[4..12].try_into().unwrap());
    let parts: Vec<&[u8]> = data[12..].split(|b| *b == 0).collect();
    let text = |i: usize| parts.get(i).and_then(|p| std::str::from_utf8(p).ok()).unwrap_or("");
    let (topic, why, node) = (text(0), text(1), text(2));
    let mut headers = Vec::new();
    for pair in parts.get(3..).unwrap_or_default().chunks(2) {
        let Ok(name) = std::str::from_utf8(pair[0]) else {
            continue;
        };
        let value = pair.get(1).copied().filter(|v| v.first() != Some(&0xff));
        headers.push((name, value));
    }
    let m = RawMessage {
        topic,
        partition,
        offset,
        headers: headers.clone(),
        ..Default::default()
    };
    let out = dead_letter_headers(node, &m, why);
    let kept: Vec<(&str, Option<&[u8]>)> = headers
        .iter()
        .filter(|(n, _)| !n.starts_with(ERROR_PREFIX))
        .copied()
        .collect();
    assert_eq!(out.len(), kept.len() + 5);
    for ((n, v), (on, ov)) in kept.iter().zip(&out) {
        assert_eq!((*n, *v), (on.as_ref(), ov.as_deref()));
    }
    let added = &out[kept.len()..];
    let value = |name: &str| -> Vec<u8> {
        let mut found = added.iter().filter(|(n, _)| n == name);
        let v = found.next().unwrap_or_else(|| panic!("{name} missing")).1.clone().unwrap();
        assert!(found.next().is_none(), "{name} twice");
        v.into_owned()
    };
    assert_eq!(value("weir.error.message"), why.as_bytes());
    assert_eq!(value("weir.error.node"), node.as_bytes());
    assert_eq!(value("weir.error.topic"), topic.as_bytes());
    assert_eq!(value("weir.error.partition"), partition.to_string().as_bytes());
    assert_eq!(value("weir.error.offset"), offset.to_string().as_bytes());
    assert!(added.iter().all(|(n, _)| n.starts_with(ERROR_PREFIX)));
});
