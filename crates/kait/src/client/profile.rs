//! Which server and token a command uses: `--server-url`/`--token`, else `KAIT_SERVER_URL`/
//! `KAIT_TOKEN`, else the profile (`--profile`, `KAIT_PROFILE`, default `default`) in the
//! profile file (`KAIT_PROFILES`, default `~/.config/kait/profiles.toml`):
//!
//! ```toml
//! [default]
//! server_url = "http://127.0.0.1:8071"
//! token = "…"
//! ```
//!
//! Without any of them: the local server on its default address, with the admin token it
//! keeps in `./kait-data/admin-token` (what `kait serve` on its defaults writes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

/// The default server of a local `kait serve`.
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:8071";
/// Where a local `kait serve` on its defaults keeps its admin token.
const LOCAL_ADMIN_TOKEN: &str = "kait-data/admin-token";

/// How to reach the server: shared by every client command.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectArgs {
    /// The Kait server's URL [env: KAIT_SERVER_URL; default: the profile's, else
    /// http://127.0.0.1:8071].
    #[arg(long, global = true)]
    pub server_url: Option<String>,
    /// An admin or app-scoped token [env: KAIT_TOKEN; default: the profile's, else
    /// ./kait-data/admin-token].
    #[arg(long, global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The profile to read from the profile file [env: KAIT_PROFILE; default: default].
    #[arg(long, global = true)]
    pub profile: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    server_url: Option<String>,
    token: Option<String>,
}

/// Where to connect, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub server_url: String,
    pub token: String,
}

/// What resolution reads besides the flags, passed in so it is tested without touching the
/// process's environment or home directory.
pub struct Environment {
    pub vars: BTreeMap<String, String>,
    pub home: Option<PathBuf>,
    pub current_dir: PathBuf,
}

impl Environment {
    pub fn of_process() -> Self {
        Self {
            vars: std::env::vars()
                .filter(|(name, _)| name.starts_with("KAIT_"))
                .collect(),
            home: std::env::var_os("HOME").map(PathBuf::from),
            current_dir: std::env::current_dir().unwrap_or_default(),
        }
    }
}

impl ConnectArgs {
    pub fn resolve(&self) -> anyhow::Result<Connection> {
        resolve(self, &Environment::of_process())
    }
}

/// Flags, then environment, then the profile, then the local defaults; each of the two
/// values on its own.
pub fn resolve(args: &ConnectArgs, environment: &Environment) -> anyhow::Result<Connection> {
    let var = |name: &str| {
        environment
            .vars
            .get(name)
            .filter(|value| !value.is_empty())
            .cloned()
    };
    let profile_name = args
        .profile
        .clone()
        .or_else(|| var("KAIT_PROFILE"))
        .unwrap_or_else(|| "default".to_owned());
    let profile_file = var("KAIT_PROFILES").map(PathBuf::from).or_else(|| {
        environment
            .home
            .as_ref()
            .map(|home| home.join(".config/kait/profiles.toml"))
    });
    let explicit_profile = args.profile.is_some() || var("KAIT_PROFILE").is_some();
    let profile = match &profile_file {
        Some(path) => read_profile(path, &profile_name, explicit_profile)?,
        None if explicit_profile => {
            bail!("profile {profile_name:?}: no profile file (set HOME or KAIT_PROFILES)")
        }
        None => None,
    };
    let server_url = args
        .server_url
        .clone()
        .or_else(|| var("KAIT_SERVER_URL"))
        .or_else(|| {
            profile
                .as_ref()
                .and_then(|profile| profile.server_url.clone())
        })
        .unwrap_or_else(|| DEFAULT_SERVER_URL.to_owned());
    let parsed = url::Url::parse(&server_url)
        .with_context(|| format!("the server URL {server_url:?} is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("the server URL {server_url:?} must be http:// or https://");
    }
    let token = match args
        .token
        .clone()
        .or_else(|| var("KAIT_TOKEN"))
        .or_else(|| profile.as_ref().and_then(|profile| profile.token.clone()))
    {
        Some(token) => token,
        None => local_admin_token(&environment.current_dir).with_context(|| {
            "no token: pass --token, set KAIT_TOKEN, or add one to a profile".to_owned()
        })?,
    };
    Ok(Connection {
        server_url: server_url.trim_end_matches('/').to_owned(),
        token: token.trim().to_owned(),
    })
}

/// The named profile; a missing file is no profile unless one was asked for by name.
fn read_profile(path: &Path, name: &str, explicit: bool) -> anyhow::Result<Option<Profile>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(None);
        }
        Err(error) => {
            return Err(error).with_context(|| format!("reading the profiles {}", path.display()));
        }
    };
    let mut profiles: BTreeMap<String, Profile> = toml::from_str(&text)
        .with_context(|| format!("reading the profiles {}", path.display()))?;
    match profiles.remove(name) {
        Some(profile) => Ok(Some(profile)),
        None if explicit => bail!("no profile {name:?} in {}", path.display()),
        None => Ok(None),
    }
}

fn local_admin_token(current_dir: &Path) -> anyhow::Result<String> {
    let path = current_dir.join(LOCAL_ADMIN_TOKEN);
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("{} is not readable", path.display()))?;
    Ok(token.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(vars: &[(&str, &str)], dir: &Path) -> Environment {
        Environment {
            vars: vars
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            home: Some(dir.to_owned()),
            current_dir: dir.to_owned(),
        }
    }

    fn profiles(dir: &Path, text: &str) -> String {
        let path = dir.join("profiles.toml");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn flags_win_over_environment_over_profile() {
        let dir = tempfile::tempdir().unwrap();
        let file = profiles(
            dir.path(),
            "[default]\nserver_url = \"http://profile:1\"\ntoken = \"from-profile\"\n\
             [staging]\nserver_url = \"https://staging.example\"\ntoken = \"staging\"\n",
        );
        let env = environment(&[("KAIT_PROFILES", &file)], dir.path());
        let from_profile = resolve(&ConnectArgs::default(), &env).unwrap();
        assert_eq!(from_profile.server_url, "http://profile:1");
        assert_eq!(from_profile.token, "from-profile");

        let env = environment(
            &[("KAIT_PROFILES", &file), ("KAIT_TOKEN", "from-env")],
            dir.path(),
        );
        let mixed = resolve(&ConnectArgs::default(), &env).unwrap();
        assert_eq!(
            (mixed.server_url.as_str(), mixed.token.as_str()),
            ("http://profile:1", "from-env")
        );

        let args = ConnectArgs {
            server_url: Some("http://flag:2/".into()),
            token: Some("from-flag".into()),
            profile: Some("staging".into()),
        };
        let flags = resolve(&args, &env).unwrap();
        assert_eq!(flags.server_url, "http://flag:2");
        assert_eq!(flags.token, "from-flag");

        let staging = resolve(
            &ConnectArgs {
                profile: Some("staging".into()),
                ..Default::default()
            },
            &environment(&[("KAIT_PROFILES", &file)], dir.path()),
        )
        .unwrap();
        assert_eq!(staging.server_url, "https://staging.example");
    }

    #[test]
    fn the_local_server_and_its_admin_token_by_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("kait-data")).unwrap();
        std::fs::write(dir.path().join("kait-data/admin-token"), "local-admin\n").unwrap();
        let connection = resolve(&ConnectArgs::default(), &environment(&[], dir.path())).unwrap();
        assert_eq!(connection.server_url, DEFAULT_SERVER_URL);
        assert_eq!(connection.token, "local-admin");
    }

    #[test]
    fn clear_errors_for_what_cannot_be_used() {
        let dir = tempfile::tempdir().unwrap();
        let no_token = resolve(&ConnectArgs::default(), &environment(&[], dir.path()));
        assert!(format!("{:#}", no_token.unwrap_err()).contains("no token"));
        let missing = resolve(
            &ConnectArgs {
                profile: Some("prod".into()),
                token: Some("t".into()),
                ..Default::default()
            },
            &environment(&[], dir.path()),
        );
        assert!(format!("{:#}", missing.unwrap_err()).contains("profiles"));
        let file = profiles(dir.path(), "[default]\nserver = \"typo\"\n");
        let typo = resolve(
            &ConnectArgs::default(),
            &environment(&[("KAIT_PROFILES", &file)], dir.path()),
        );
        assert!(format!("{:#}", typo.unwrap_err()).contains("unknown field"));
        let bad_url = resolve(
            &ConnectArgs {
                server_url: Some("ftp://x".into()),
                token: Some("t".into()),
                ..Default::default()
            },
            &environment(&[], dir.path()),
        );
        assert!(format!("{:#}", bad_url.unwrap_err()).contains("http"));
    }
}
