//! JSON message payloads: the byte scanner that enforces `--max-payload-depth` before any
//! parse must agree with the real nesting of every document serde_json accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Nesting depth as `validate::json_depth` counts it (a scalar is 0), walked iteratively.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, level)) = stack.pop() {
        match value {
            Value::Array(items) => {
                deepest = deepest.max(level + 1);
                stack.extend(items.iter().map(|item| (item, level + 1)));
            }
            Value::Object(members) => {
                deepest = deepest.max(level + 1);
                stack.extend(members.values().map(|member| (member, level + 1)));
            }
            _ => {}
        }
    }
    deepest
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let scanned = kait_core::validate::json_depth(text);
    // serde_json stops at 128 levels with an error, never a crash.
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        assert_eq!(
            scanned,
            depth(&value),
            "the depth scan disagrees with the parse"
        );
    }
});
