//! Devices (issue 16), the pure part: how an MQTT topic is read (`topic.rs`: patterns with
//! named segments, the subscription filter they stand for, templates filled from them) and
//! how a route turns one device message into a Kait message (`route.rs`: application, event
//! type, ordering key, event id, JSON or raw body). No I/O: the MQTT client lives in the
//! binary and calls [`Route::message`] for each publish.

pub mod route;
pub mod topic;

pub use route::{AppSource, Body, DeviceMessage, Route, RouteError, RouteSpec};
pub use topic::{Template, TopicPattern};
