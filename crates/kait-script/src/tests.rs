//! The sandbox against friendly and hostile code. Every hostile case must end in an error
//! for that call only: the same thread then compiles and runs another script normally.

use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::*;

fn input(payload: &str) -> (Box<RawValue>, String) {
    (
        RawValue::from_string(payload.to_owned()).unwrap(),
        String::new(),
    )
}

fn run(code: &str, payload: &str) -> Result<TransformationOutput, ScriptError> {
    let transformation = Transformation::compile(code, Limits::default())?;
    let (payload, _) = input(payload);
    transformation.run(&TransformationInput {
        method: "POST",
        url: "https://example.com/hook",
        event_type: "order.created",
        payload: &payload,
        cancel: false,
    })
}

/// After any failure, the sandbox still works.
fn still_works() {
    let output = run(
        "function handler(w) { w.payload.ok = true; return w; }",
        r#"{"n":1}"#,
    )
    .unwrap();
    assert_eq!(output.payload, r#"{"n":1,"ok":true}"#);
}

#[test]
fn a_handler_rewrites_the_payload_url_and_method() {
    let output = run(
        r#"function handler(webhook) {
            webhook.payload = { total: webhook.payload.items.reduce((a, b) => a + b, 0), type: webhook.eventType };
            webhook.url = webhook.url + "?v=2";
            webhook.method = "PUT";
            return webhook;
        }"#,
        r#"{"items":[1,2,3.5]}"#,
    )
    .unwrap();
    assert_eq!(output.payload, r#"{"total":6.5,"type":"order.created"}"#);
    assert_eq!(output.url, "https://example.com/hook?v=2");
    assert_eq!(output.method, "PUT");
    assert!(!output.cancel);
}

#[test]
fn a_handler_cancels() {
    let output = run(
        "function handler(w) { w.cancel = w.payload.test === true; return w; }",
        r#"{"test":true}"#,
    )
    .unwrap();
    assert!(output.cancel);
}

#[test]
fn compiled_once_called_many_times() {
    let transformation = Transformation::compile(
        "let calls = 0; function handler(w) { calls += 1; w.payload = {calls}; return w; }",
        Limits::default(),
    )
    .unwrap();
    let (payload, _) = input("{}");
    let call = || {
        transformation
            .run(&TransformationInput {
                method: "POST",
                url: "https://example.com/",
                event_type: "a",
                payload: &payload,
                cancel: false,
            })
            .unwrap()
            .payload
    };
    assert_eq!(call(), r#"{"calls":1}"#);
    assert_eq!(call(), r#"{"calls":2}"#);
}

#[test]
fn an_endless_loop_is_stopped_in_time() {
    let started = Instant::now();
    let error = run("function handler(w) { for (;;) {} }", "{}").unwrap_err();
    assert_eq!(error, ScriptError::TimedOut(Limits::default().time));
    // Bounded, not a measurement: the interrupt is polled, so allow generous slack.
    assert!(started.elapsed() < Duration::from_secs(10));
    let error = run("while (true) {} function handler(w) { return w; }", "{}").unwrap_err();
    assert_eq!(error, ScriptError::TimedOut(Limits::default().time));
    still_works();
}

#[test]
fn deep_recursion_is_an_error_not_a_crash() {
    let error = run(
        "function down(n) { return down(n + 1) + 1; } function handler(w) { down(0); return w; }",
        "{}",
    )
    .unwrap_err();
    assert_eq!(error, ScriptError::TooDeep);
    still_works();
}

#[test]
fn a_huge_allocation_fails_the_call_only() {
    let error = run(
        "function handler(w) { const a = []; while (true) { a.push(new Array(100000).fill(1)); } }",
        "{}",
    )
    .unwrap_err();
    assert_eq!(
        error,
        ScriptError::OutOfMemory(Limits::default().memory_bytes)
    );
    let error = run(
        "function handler(w) { w.payload = { big: 'x'.repeat(1 << 29) }; return w; }",
        "{}",
    )
    .unwrap_err();
    assert_eq!(
        error,
        ScriptError::OutOfMemory(Limits::default().memory_bytes)
    );
    // Doubling a string makes ropes, not copies: it ends at the engine's longest string.
    let error = run(
        r#"function handler(w) { let s = "x"; while (true) { s = s + s; } }"#,
        "{}",
    )
    .unwrap_err();
    assert!(
        matches!(&error, ScriptError::Thrown(text) if text.contains("string too long")),
        "{error:?}"
    );
    still_works();
}

#[test]
fn nothing_outside_the_language_is_reachable() {
    for code in [
        "function handler(w) { return require('fs'); }",
        "function handler(w) { return process.env; }",
        "function handler(w) { return fetch('http://127.0.0.1/'); }",
        "function handler(w) { return std.getenv('HOME'); }",
        "function handler(w) { return os.exec(['ls']); }",
    ] {
        let error = run(code, "{}").unwrap_err();
        assert!(
            matches!(&error, ScriptError::Thrown(text) if text.contains("not defined")),
            "{code}: {error:?}"
        );
    }
    still_works();
}

#[test]
fn bad_code_and_bad_results_are_named() {
    assert!(matches!(
        run("function handler(w) {", "{}"),
        Err(ScriptError::Compile(_))
    ));
    assert_eq!(
        run("function other(w) { return w; }", "{}").unwrap_err(),
        ScriptError::NoEntry("handler")
    );
    assert!(matches!(
        run("function handler(w) { throw new Error('no thanks'); }", "{}"),
        Err(ScriptError::Thrown(text)) if text.contains("no thanks")
    ));
    assert!(matches!(
        run("function handler(w) { }", "{}"),
        Err(ScriptError::BadResult(_))
    ));
    assert!(matches!(
        run(
            "function handler(w) { w.method = 'DELETE'; return w; }",
            "{}"
        ),
        Err(ScriptError::BadResult(_))
    ));
    assert!(matches!(
        run("function handler(w) { w.payload = [1]; return w; }", "{}"),
        Err(ScriptError::BadResult(_))
    ));
    // A script throwing the word the interrupt uses is not a timeout.
    assert!(matches!(
        run(
            "function handler(w) { throw new Error('interrupted'); }",
            "{}"
        ),
        Err(ScriptError::Thrown(_))
    ));
}

#[test]
fn expressions_are_functions_over_an_event() {
    let filter = Script::compile(
        "e => e.payload.total > 100",
        Entry::Expression,
        Limits::default(),
    )
    .unwrap();
    assert_eq!(
        filter.call_json(r#"{"payload":{"total":150}}"#).unwrap(),
        "true"
    );
    assert_eq!(
        filter.call_json(r#"{"payload":{"total":5}}"#).unwrap(),
        "false"
    );
    assert!(matches!(
        Script::compile("42", Entry::Expression, Limits::default()),
        Err(ScriptError::NoEntry(_))
    ));
}

#[test]
fn running_out_of_memory_inside_json_parse_fails_cleanly() {
    // Fuzzing's input (SECURITY.md): QuickJS loses the string on this path; the runtime's
    // allocator frees it with the runtime.
    let code = "function f(){ JSON.parse(\"[f\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{c}unction handler(w){\".repeat(100000)) }";
    let limits = Limits {
        memory_bytes: 8 * 1024 * 1024,
        ..Limits::default()
    };
    let script = Script::compile(code, Entry::Expression, limits).unwrap();
    assert!(script.call_json("{}").is_err());
    drop(script);
    still_works();
}
