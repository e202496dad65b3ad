//! CEL: the first line is an expression, the rest a JSON record; compile and evaluate must
//! return (a value or an error), never panic or overflow the stack. Runs on a thread with a
//! tokio worker's 2 MiB stack, where `weir run` evaluates.
#![no_main]

use cel_interpreter::Context;
use libfuzzer_sys::fuzz_target;
use weir_runtime::api::Record;
use weir_runtime::transforms::cel::{to_json, Expr};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (source, record) = text.split_once('\n').unwrap_or((text, "{}"));
    let Ok(expr) = Expr::compile(source) else {
        return;
    };
    let fields = match serde_json::from_str::<serde_json::Value>(record) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let root = Context::default();
            if let Ok(v) = expr.eval(&root, &Record::new(fields)) {
                let _ = to_json(&v);
            }
        })
        .unwrap()
        .join()
        .unwrap();
});
