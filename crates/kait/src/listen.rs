//! `kait listen`: a local receiver for people building webhook consumers.
//!
//! Push mode runs an HTTP server and prints every webhook it gets: method and path, the
//! Standard Webhooks headers, the body (pretty JSON, or as sent), whether the signature is
//! valid (with `--secret`), and the delay since it was signed. Pull mode follows an
//! application's polling endpoint instead, so a developer behind NAT sees live events without
//! a public URL. `--forward` relays each event to a local server in both modes.
//!
//! What it receives is untrusted: in push mode only requests whose signature verified are
//! forwarded (unless `--forward-unverified`), and everything printed has its control
//! characters escaped, so a body cannot send escape sequences to the terminal.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use clap::Args;
use kait_core::signing::{self, VerificationKey};

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Port to receive webhooks on (0 picks a free one).
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    /// Address to bind; loopback unless you mean otherwise.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Verify signatures with this `whsec_` secret (or `whpk_` public key).
    #[arg(long, env = "KAIT_LISTEN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Relay each webhook to this URL (e.g. http://localhost:3000/hooks). In push mode only
    /// webhooks whose signature verified with --secret are relayed.
    #[arg(long)]
    pub forward: Option<String>,
    /// Relay webhooks whose signature was not verified too (no --secret, or a bad one).
    #[arg(long, requires = "forward")]
    pub forward_unverified: bool,
    /// Follow a polling endpoint instead of receiving webhooks.
    #[arg(long)]
    pub pull: bool,
    /// The Kait server to poll (with --pull).
    #[arg(long, requires = "pull")]
    pub server: Option<String>,
    /// An admin or app-scoped token (with --pull).
    #[arg(
        long,
        env = "KAIT_LISTEN_TOKEN",
        hide_env_values = true,
        requires = "pull"
    )]
    pub token: Option<String>,
    /// The application's id or uid (with --pull).
    #[arg(long, requires = "pull")]
    pub app: Option<String>,
    /// The polling endpoint's id (with --pull); by default the app's first polling endpoint.
    #[arg(long, requires = "pull")]
    pub endpoint: Option<String>,
    /// Save each event's attachments in this directory (fetched through their signed links,
    /// or decoded when inline), checked against their SHA-256. In push mode only from
    /// webhooks whose signature verified with --secret.
    #[arg(long)]
    pub download: Option<std::path::PathBuf>,
}

pub fn run(args: ListenArgs) -> anyhow::Result<()> {
    let verifier = args
        .secret
        .as_deref()
        .map(VerificationKey::parse)
        .transpose()
        .map_err(|error| anyhow::anyhow!("--secret: {error}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(dir) = &args.download {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--download: creating {}", dir.display()))?;
        if !args.pull && verifier.is_none() {
            bail!(
                "--download in push mode saves only what verified webhooks link to: give --secret"
            );
        }
    }
    let download = args.download.clone().map(Downloads::new).transpose()?;
    runtime.block_on(async move {
        let forward = Forward::new(args.forward.clone())?;
        if args.pull {
            let (Some(server), Some(token), Some(app)) = (args.server, args.token, args.app) else {
                bail!("--pull needs --server, --token and --app");
            };
            let endpoint = match args.endpoint {
                Some(endpoint) => endpoint,
                None => find_polling_endpoint(&server, &token, &app).await?,
            };
            pull(server, token, app, endpoint, forward, download).await
        } else {
            if args.forward.is_some() && verifier.is_none() && !args.forward_unverified {
                bail!(
                    "--forward in push mode relays only verified webhooks: give --secret, \
                     or --forward-unverified to relay anything that arrives"
                );
            }
            let policy = ForwardPolicy {
                forward,
                unverified_too: args.forward_unverified,
                download,
            };
            push(SocketAddr::new(args.host, args.port), verifier, policy).await
        }
    })
}

/// Relays events to a local server; talks to the user's own machine on purpose.
#[derive(Clone)]
struct Forward {
    url: Option<String>,
    client: reqwest::Client,
}

impl Forward {
    fn new(url: Option<String>) -> anyhow::Result<Self> {
        if let Some(url) = &url {
            kait_core::validate::endpoint_url(url)
                .map_err(|problem| anyhow::anyhow!("--forward: {problem}"))?;
        }
        Ok(Self {
            url,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()?,
        })
    }

    /// Sends the body with the given headers; returns the status, or prints why it failed.
    async fn send(&self, headers: &HeaderMap, body: Bytes) -> Option<StatusCode> {
        let url = self.url.as_ref()?;
        let mut request = self.client.post(url).body(body);
        for (name, value) in headers {
            if !matches!(
                name.as_str(),
                "host" | "content-length" | "connection" | "transfer-encoding"
            ) {
                request = request.header(name, value);
            }
        }
        match request.send().await {
            Ok(response) => {
                println!("  forwarded to {url}: {}", response.status());
                Some(response.status())
            }
            Err(error) => {
                println!("  forwarding to {url} failed: {error}");
                Some(StatusCode::BAD_GATEWAY)
            }
        }
    }
}

/// Which received webhooks are relayed in push mode.
#[derive(Clone)]
struct ForwardPolicy {
    forward: Forward,
    unverified_too: bool,
    /// Where verified webhooks' attachments are saved (`--download`).
    download: Option<Downloads>,
}

/// Saves attachments (`--download`): each streamed to `{dir}/{id}[-{filename}]` while its
/// SHA-256 is computed, and removed again if it does not match.
#[derive(Clone)]
struct Downloads {
    dir: std::path::PathBuf,
    client: reqwest::Client,
}

impl Downloads {
    fn new(dir: std::path::PathBuf) -> anyhow::Result<Self> {
        Ok(Self {
            dir,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(600))
                .build()?,
        })
    }

    /// Saves every attachment of `attachments` (the `attachments` array of an event).
    async fn save_all(&self, attachments: &serde_json::Value) {
        for attachment in attachments.as_array().into_iter().flatten() {
            match self.save(attachment).await {
                Ok(line) => println!("  {line}"),
                Err(error) => println!(
                    "  attachment not saved: {}",
                    printable(&format!("{error:#}"))
                ),
            }
        }
    }

    async fn save(&self, attachment: &serde_json::Value) -> anyhow::Result<String> {
        use base64::Engine;
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        let id = attachment["id"]
            .as_str()
            .context("an attachment without an id")?;
        let id = kait_core::AttachmentId::parse(id).context("not an attachment id")?;
        let name = match attachment["filename"].as_str() {
            Some(filename) => format!("{id}-{}", safe_filename(filename)),
            None => id.to_string(),
        };
        let path = self.dir.join(&name);
        let mut file = tokio::fs::File::create(&path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        let mut hasher = sha2::Sha256::new();
        let mut size = 0usize;
        let written: anyhow::Result<()> = async {
            if let Some(inline) = attachment["data"].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(inline)
                    .context("inline data is not base64")?;
                hasher.update(&bytes);
                size = bytes.len();
                file.write_all(&bytes).await?;
            } else {
                let url = attachment["url"]
                    .as_str()
                    .context("no url and no inline data")?;
                let mut response = self.client.get(url).send().await?.error_for_status()?;
                while let Some(chunk) = response.chunk().await? {
                    hasher.update(&chunk);
                    size += chunk.len();
                    file.write_all(&chunk).await?;
                }
            }
            file.sync_all().await?;
            Ok(())
        }
        .await;
        let digest = hex::encode(hasher.finalize());
        let expected = attachment["sha256"].as_str().unwrap_or_default();
        if let Err(error) = written {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(error);
        }
        if digest != expected {
            let _ = tokio::fs::remove_file(&path).await;
            bail!("{id}: its SHA-256 is {digest}, not {expected}: removed");
        }
        Ok(format!(
            "saved {} ({size} bytes, sha256 ok)",
            printable(&path.display().to_string())
        ))
    }
}

/// A received filename made safe to create: no directories, no control characters, no
/// leading dots, at most 100 characters.
fn safe_filename(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':') {
                '_'
            } else {
                c
            }
        })
        .take(100)
        .collect();
    let cleaned = cleaned.trim_start_matches('.');
    if cleaned.is_empty() {
        "attachment".to_owned()
    } else {
        cleaned.to_owned()
    }
}

fn pretty(body: &[u8]) -> String {
    printable(&match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => serde_json::to_string_pretty(&value).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    })
}

/// `text` with its control characters (C0 but newline and tab, DEL, C1) written as `\u{…}`,
/// so that received bytes cannot move the cursor, recolour or retitle the terminal.
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        if character.is_control() && character != '\n' && character != '\t' {
            out.push_str(&format!("\\u{{{:x}}}", character as u32));
        } else {
            out.push(character);
        }
    }
    out
}

async fn push(
    address: SocketAddr,
    verifier: Option<VerificationKey>,
    policy: ForwardPolicy,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    println!("kait listen on http://{}", listener.local_addr()?);
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (verifier, policy) = (verifier.clone(), policy.clone());
            async move {
                let verified = print_webhook(&method, &uri, &headers, &body, verifier.as_ref());
                if verified == Some(true)
                    && let Some(downloads) = &policy.download
                    && let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body)
                {
                    downloads.save_all(&event["attachments"]).await;
                }
                if verified == Some(false) {
                    // A forged or damaged webhook: refused, and never relayed.
                    if !policy.unverified_too {
                        if policy.forward.url.is_some() {
                            println!("  not forwarded: the signature did not verify");
                        }
                        return StatusCode::UNAUTHORIZED;
                    }
                } else if verified.is_none() && !policy.unverified_too {
                    return StatusCode::NO_CONTENT;
                }
                policy
                    .forward
                    .send(&headers, body)
                    .await
                    .unwrap_or(StatusCode::NO_CONTENT)
            }
        },
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// Prints a received webhook; returns whether its signature verified (`None` without a key).
fn print_webhook(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    verifier: Option<&VerificationKey>,
) -> Option<bool> {
    let header = |name: &str| {
        headers
            .get(format!("webhook-{name}"))
            .or_else(|| headers.get(format!("svix-{name}")))
            .and_then(|value| value.to_str().ok())
    };
    let now = chrono::Utc::now();
    let verified = verifier.map(|key| {
        signing::verify(
            key,
            header("id"),
            header("timestamp"),
            header("signature"),
            body,
            now.timestamp(),
            signing::DEFAULT_TOLERANCE_SECONDS,
        )
    });
    let signature = match &verified {
        None => "not checked (no --secret)".to_owned(),
        Some(Ok(())) => "valid".to_owned(),
        Some(Err(error)) => format!("INVALID ({error})"),
    };
    let latency = header("timestamp")
        .and_then(|timestamp| timestamp.parse::<i64>().ok())
        .and_then(|signed| signed.checked_mul(1000))
        .and_then(|signed| now.timestamp_millis().checked_sub(signed))
        .map(|millis| format!("{millis} ms"))
        .unwrap_or_else(|| "unknown".into());
    println!("── {method} {}", printable(&uri.to_string()));
    println!("  id: {}", printable(header("id").unwrap_or("-")));
    println!("  signature: {signature}");
    println!("  since signed: {latency}");
    if let Some(content_type) = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
    {
        println!("  content-type: {}", printable(content_type));
    }
    println!("{}", pretty(body));
    verified.map(|result| result.is_ok())
}

/// The application's first polling endpoint.
async fn find_polling_endpoint(server: &str, token: &str, app: &str) -> anyhow::Result<String> {
    let url = format!(
        "{}/api/v1/app/{app}/endpoint?limit=250",
        server.trim_end_matches('/')
    );
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let page: serde_json::Value = serde_json::from_slice(&body)?;
    page["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|endpoint| endpoint["kind"] == "polling")
        .and_then(|endpoint| endpoint["id"].as_str())
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "application {app} has no polling endpoint (create one with \"kind\": \"polling\")"
            )
        })
}

async fn pull(
    server: String,
    token: String,
    app: String,
    endpoint: String,
    forward: Forward,
    download: Option<Downloads>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let base = format!(
        "{}/api/v1/app/{app}/poller/{endpoint}",
        server.trim_end_matches('/')
    );
    println!("kait listen following {base}");
    let mut iterator: Option<String> = None;
    loop {
        let url = match &iterator {
            Some(iterator) => format!("{base}?timeout=30s&iterator={iterator}"),
            None => format!("{base}?timeout=30s"),
        };
        let response = tokio::select! {
            response = client.get(&url).bearer_auth(&token).send() => response,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                println!("  polling failed: {error}; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "{base} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let page: serde_json::Value = serde_json::from_slice(&body)?;
        for message in page["data"].as_array().into_iter().flatten() {
            println!(
                "── {} {}",
                printable(message["eventType"].as_str().unwrap_or("-")),
                printable(message["id"].as_str().unwrap_or("-"))
            );
            println!(
                "{}",
                printable(&serde_json::to_string_pretty(&message["payload"])?)
            );
            let mut headers = HeaderMap::new();
            if let Some(id) = message["id"].as_str().and_then(|id| id.parse().ok()) {
                headers.insert("webhook-id", id);
            }
            headers.insert("content-type", "application/json".parse().expect("static"));
            forward
                .send(&headers, Bytes::from(message["payload"].to_string()))
                .await;
            if let Some(downloads) = &download {
                downloads.save_all(&message["attachments"]).await;
            }
        }
        if let Some(next) = page["iterator"].as_str() {
            iterator = Some(next.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_filenames_cannot_leave_the_directory() {
        assert_eq!(safe_filename("clip.mp4"), "clip.mp4");
        assert_eq!(safe_filename("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_filename("..."), "attachment");
        assert_eq!(safe_filename("a\nb"), "a_b");
        assert_eq!(safe_filename(&"x".repeat(300)).len(), 100);
    }

    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(
            printable("\u{1b}]0;pwned\u{7}ok\n\tline\u{9b}2J\u{7f}"),
            "\\u{1b}]0;pwned\\u{7}ok\n\tline\\u{9b}2J\\u{7f}"
        );
        // JSON keeps its own escapes; raw DEL and C1 inside strings are escaped here.
        let body = "{\"a\":\"x\u{9b}y\"}".as_bytes();
        assert!(!pretty(body).contains('\u{9b}'));
        assert!(!pretty(b"plain \x1b[31mred").contains('\u{1b}'));
    }
}
