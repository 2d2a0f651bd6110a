//! Kait's HTTP sender: the egress guard, the signed request, and what came of it.
//!
//! [`Sender::send`] takes one webhook (URL, body, signing key, custom headers), refuses targets
//! the [`EgressPolicy`] forbids, signs the body per Standard Webhooks, POSTs it over a pooled
//! keep-alive client that never follows redirects, and returns an [`AttemptResult`] with the
//! status, the capped response body and the duration. Deciding whether to retry is the
//! dispatcher's job; this crate only reports.

pub mod guard;
mod sender;

pub use guard::{BlockedAddress, EgressPolicy};
/// The request method a webhook is sent with (POST, or PUT when a transformation asks).
pub use http::Method;
/// Header types used in [`Webhook`], so callers need not depend on the HTTP client.
pub use http::header;
pub use rustls::pki_types::CertificateDer;
pub use sender::{
    AttemptResult, SendError, Sender, SenderConfig, Target, Webhook, read_pem_certificates,
    tls_client_config,
};
