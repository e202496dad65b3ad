//! Spec parsing and validation: any text gives a spec or errors, never a panic, abort or hang
//! (libFuzzer's -timeout catches the last).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_crds::PipelineSpec;
use weir_runtime::registry::Registry;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = PipelineSpec::from_yaml(text) else {
        return;
    };
    thread_local! {
        static REGISTRY: Registry = Registry::with_builtins();
    }
    REGISTRY.with(|r| {
        if let Err(errors) = r.validate(&spec) {
            assert!(!errors.is_empty());
        }
    });
});
