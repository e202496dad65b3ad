//! The lazy JSON record check (`record/json.rs`) agrees with serde_json: it accepts exactly the
//! texts that parse into a map, its fields are serde_json's, and `get` finds every field
//! (the last of a repeated key) and nothing else.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use weir_runtime::record::JsonObject;

fuzz_target!(|data: &[u8]| {
    let lazy = JsonObject::parse(Bytes::copy_from_slice(data));
    let eager = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data);
    match (lazy, eager) {
        (Ok(lazy), Ok(eager)) => {
            assert_eq!(lazy.fields(), eager);
            for (k, v) in &eager {
                assert_eq!(lazy.get(k).as_ref(), Some(v), "field {k:?}");
            }
            assert_eq!(lazy.get("\u{0}not a key\u{0}"), None);
        }
        (Err(_), Err(_)) => {}
        (lazy, eager) => panic!(
            "lazy check {} but serde_json {}",
            if lazy.is_ok() { "accepts" } else { "rejects" },
            if eager.is_ok() { "accepts" } else { "rejects" }
        ),
    }
});
