//! `kait verify`: checks a saved webhook request's signature and timestamp, for people
//! debugging their receiver.
//!
//! The input is the request as it arrived on the wire (as `nc -l` or a proxy log shows it):
//! an optional request line, `Name: value` header lines, a blank line, then the body exactly
//! as received. The `webhook-*` headers are used, or the `svix-*` ones when those are absent.

use std::io::Read;

use anyhow::{Context, bail};
use clap::Args;
use kait_core::signing::{self, VerificationKey};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The endpoint's signing secret (`whsec_…`) or, for Ed25519 endpoints, its public key (`whpk_…`).
    #[arg(long, env = "KAIT_VERIFY_SECRET", hide_env_values = true)]
    pub secret: String,
    /// How far the timestamp may be from now, e.g. 5m.
    #[arg(long, default_value = "5m")]
    pub tolerance: String,
}

/// A parsed request: header pairs (names lower-cased) and the raw body.
#[derive(Debug)]
pub struct SavedRequest {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SavedRequest {
    pub fn parse(raw: &[u8]) -> anyhow::Result<Self> {
        let (head, body) =
            split_head(raw).context("no blank line between the headers and the body")?;
        let head = std::str::from_utf8(head).context("the headers are not UTF-8")?;
        let mut headers = Vec::new();
        for line in head.lines() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            match line.split_once(':') {
                Some((name, value)) if !name.contains(' ') => {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
                // The request line (`POST /hook HTTP/1.1`) or a status line: not a header.
                _ if headers.is_empty() => {}
                _ => bail!("malformed header line: {line:?}"),
            }
        }
        Ok(Self {
            headers,
            body: body.to_vec(),
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    /// A Standard Webhooks header, or its `svix-` alias.
    fn webhook_header(&self, suffix: &str) -> Option<&str> {
        self.header(&format!("webhook-{suffix}"))
            .or_else(|| self.header(&format!("svix-{suffix}")))
    }
}

fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    for separator in [&b"\r\n\r\n"[..], &b"\n\n"[..]] {
        if let Some(index) = raw
            .windows(separator.len())
            .position(|window| window == separator)
        {
            return Some((&raw[..index], &raw[index + separator.len()..]));
        }
    }
    None
}

/// Verifies `request` and says why not if it fails.
pub fn check(
    request: &SavedRequest,
    secret: &str,
    tolerance_seconds: i64,
    now_seconds: i64,
) -> anyhow::Result<()> {
    let key =
        VerificationKey::parse(secret).context("--secret is not a whsec_ secret or whpk_ key")?;
    signing::verify(
        &key,
        request.webhook_header("id"),
        request.webhook_header("timestamp"),
        request.webhook_header("signature"),
        &request.body,
        now_seconds,
        tolerance_seconds,
    )
    .map_err(|error| anyhow::anyhow!("invalid webhook: {error}"))
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let tolerance = humantime::parse_duration(&args.tolerance)
        .with_context(|| format!("--tolerance: `{}` is not a duration", args.tolerance))?;
    let mut raw = Vec::new();
    std::io::stdin()
        .read_to_end(&mut raw)
        .context("reading the request from standard input")?;
    let request = SavedRequest::parse(&raw)?;
    check(
        &request,
        &args.secret,
        tolerance.as_secs() as i64,
        chrono::Utc::now().timestamp(),
    )?;
    println!(
        "valid: {} signed at {}",
        request.webhook_header("id").unwrap_or_default(),
        request.webhook_header("timestamp").unwrap_or_default()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use kait_core::signing::Secret;

    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn saved(timestamp: i64, body: &str, signature: Option<&str>) -> Vec<u8> {
        let key = Secret::parse(SECRET).unwrap().signing_key();
        let signature = signature
            .map(str::to_owned)
            .unwrap_or_else(|| key.sign("msg_1", timestamp, body.as_bytes()));
        format!(
            "POST /hook HTTP/1.1\r\nHost: localhost\r\nwebhook-id: msg_1\r\nwebhook-timestamp: {timestamp}\r\nwebhook-signature: {signature}\r\n\r\n{body}"
        )
        .into_bytes()
    }

    #[test]
    fn accepts_a_good_request() {
        let request = SavedRequest::parse(&saved(1_000, "{\"a\":1}", None)).unwrap();
        check(&request, SECRET, 300, 1_010).unwrap();
    }

    #[test]
    fn refuses_tampering_old_timestamps_and_empty_signatures() {
        let mut tampered = saved(1_000, "{\"a\":1}", None);
        *tampered.last_mut().unwrap() = b']';
        let request = SavedRequest::parse(&tampered).unwrap();
        assert!(check(&request, SECRET, 300, 1_000).is_err());

        let request = SavedRequest::parse(&saved(1_000, "{}", None)).unwrap();
        let error = check(&request, SECRET, 300, 1_301).unwrap_err();
        assert!(error.to_string().contains("tolerance"), "{error}");

        let request = SavedRequest::parse(&saved(1_000, "{}", Some("v1,"))).unwrap();
        assert!(check(&request, SECRET, 300, 1_000).is_err());
    }

    #[test]
    fn reads_svix_headers_and_bare_newlines() {
        let key = Secret::parse(SECRET).unwrap().signing_key();
        let signature = key.sign("msg_2", 50, b"{}");
        let raw =
            format!("svix-id: msg_2\nsvix-timestamp: 50\nsvix-signature: {signature}\n\n{{}}");
        let request = SavedRequest::parse(raw.as_bytes()).unwrap();
        check(&request, SECRET, 300, 60).unwrap();
        assert!(SavedRequest::parse(b"no blank line").is_err());
    }
}
