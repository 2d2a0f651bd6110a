//! Plugins' replies (issue 17): the body a plugin answers a webhook with (its first 4 KiB, as
//! the sender keeps it) is read for actions and each action decided against the grant. No
//! panic; at most 16 actions; a narrowed grant admits exactly the names it names; a plugin
//! not allowed reply actions gets none.
#![no_main]

use kait_core::scope::Scopes;
use kait_plugins::reply::{self, Action, Reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(&data[..data.len().min(4096)]);
    let grant = Scopes::parse(&["messages:write:camera.*", "devices:command:gate-*"]).unwrap();
    match reply::read(&body) {
        Reply::Plain => {}
        Reply::Unreadable(reason) => assert!(!reason.is_empty()),
        Reply::Actions(actions) => {
            assert!(actions.len() <= reply::MAX_ACTIONS);
            for action in actions.into_iter().flatten() {
                let decided = reply::decide(true, &grant, &action);
                match &action {
                    Action::CreateMessage { event_type, .. } => {
                        assert_eq!(decided.is_ok(), event_type.starts_with("camera."))
                    }
                    Action::SendCommand { device, .. } => {
                        assert_eq!(decided.is_ok(), device.starts_with("gate-"))
                    }
                    Action::PatchEndpoint { .. } => assert!(decided.is_err()),
                    Action::Acknowledge => assert!(decided.is_ok()),
                }
                assert!(reply::decide(false, &grant, &action).is_err());
            }
        }
    }
});
