//! Devices (issue 16), the pure part: how an MQTT topic is read (`topic.rs`: patterns with
//! named segments, the subscription filter they stand for, templates filled from them), how a
//! route turns one device message into a Kait message or a device's status (`route.rs`:
//! application, event type, ordering key, event id, JSON or raw body; online/offline), and
//! where commands to devices and their replies travel (`command.rs`). No I/O: the MQTT client
//! lives in the binary and calls [`Route::read`] for each publish.

pub mod command;
pub mod route;
pub mod topic;

pub use command::{CommandTarget, CommandTopic, ReplyTopic};
pub use route::{
    AppSource, Body, DeviceMessage, MAX_ATTACHMENT_ABOVE_BYTES, MAX_SILENCE_TIMEOUT_SECS, Reading,
    Route, RouteError, RouteSpec, check_segment, read_status,
};
pub use topic::{Template, TopicPattern};
