//! User JavaScript (issue 14's transformations and pipe expressions) is the outside world's
//! to write. Compiling and running any code in the sandbox must never crash the process,
//! whatever it does within its limits; every failure is a `ScriptError`.
#![no_main]

use std::time::Duration;

use kait_script::{Entry, Limits, Script, Transformation, TransformationInput};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    memory_bytes: 8 * 1024 * 1024,
    stack_bytes: 256 * 1024,
    time: Duration::from_millis(50),
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (code, payload) = text.split_once('\u{0}').unwrap_or((&text, "{}"));
    if let Ok(transformation) = Transformation::compile(code, LIMITS) {
        let payload = serde_json::value::RawValue::from_string(payload.to_owned())
            .unwrap_or_else(|_| serde_json::value::RawValue::from_string("{}".into()).unwrap());
        let _ = transformation.run(&TransformationInput {
            method: "POST",
            url: "https://example.com/hook",
            event_type: "fuzz.event",
            payload: &payload,
            cancel: false,
        });
    }
    if let Ok(expression) = Script::compile(code, Entry::Expression, LIMITS) {
        let _ = expression.call_json(r#"{"payload":{"n":1}}"#);
    }
});
