//! What both backends decide the same way, written once as plain functions and tested without
//! a database. The backends hold only SQL and row mapping; anything that is not SQL text
//! (how an attempt moves a delivery on, how a batch of outcomes folds into endpoint health and
//! when that disables an endpoint, how claimed rows become deliveries, how filters and pages
//! become conditions) belongs here.

pub mod claims;
pub mod health;
pub mod listings;
pub mod query;
pub mod redelivery;
pub mod transitions;
