//! Pipe definitions (issue 14), as `POST /api/v1/pipe` builds them from an admin's JSON:
//! any JSON value read as a definition must be refused with a place and a reason, or read
//! into a definition that keeps its limits, writes back to what it reads, and whose steps
//! can all be found again by their address.
#![no_main]

use kait_pipe::definition::{self, Action, Definition};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The API reads bodies with a depth limit before this parser sees them.
    if kait_core::validate::json_depth(&String::from_utf8_lossy(data)) > 64 {
        return;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(parsed) = Definition::parse(&value) else {
        return;
    };
    assert!(!parsed.trigger.event_types.is_empty());
    let written = serde_json::to_value(&parsed).expect("a definition serializes");
    assert_eq!(Definition::parse(&written).expect("reads back"), parsed);
    assert!(parsed.expects().len() <= definition::MAX_ACTIONS);
    for (path, action) in parsed.expects() {
        assert!(matches!(action, Action::Expect { .. }), "{path}");
    }
    assert!(parsed.event_types().is_superset(&parsed.trigger.event_types));
    let _ = parsed.expressions();
    assert!(parsed.trigger.all_sources().len() <= definition::MAX_SOURCES);
    assert_eq!(
        parsed.trigger.app.is_some(),
        parsed.trigger.all_sources().is_empty()
    );
    // Every forward the reader kept has one target the engine can send to (a tag in the
    // written JSON is never inside a string: quotes there are escaped).
    let text = serde_json::to_string(&parsed).expect("a definition serializes");
    let forwards = text.matches(r#"{"type":"forward""#).count();
    assert_eq!(parsed.forwards().len(), forwards);
    assert!(parsed.list_at(&[]).is_some());
});
