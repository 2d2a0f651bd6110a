//! Plugins (issue 17): what Kait does with a plugin's answer to a webhook.
//!
//! A plugin's endpoint (kind `plugin`, made by installing it) may answer a webhook with `200`
//! and `{"actions": [...]}`. `reply.rs` reads the actions and decides each against the
//! installation's scopes (pure, unit-tested); `runner.rs` is the dispatcher's
//! [`kait_dispatch::ReplyRunner`]: it runs the allowed actions through the store and the
//! device link, and writes every action's result (done, or refused with the reason) to the
//! plugins' audit log, under the attempt's id.

pub mod reply;
mod runner;

pub use runner::Replies;
