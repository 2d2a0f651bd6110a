//! The `kait` binary as a child process, for tests that must kill it (`kill -9`), through the
//! same launcher `kait bench` uses (`kait::launch`).

use kait::launch::ServeProcess;

use super::{ADMIN_TOKEN, Storage};

pub struct KaitProcess {
    process: ServeProcess,
    pub base_url: String,
}

impl KaitProcess {
    /// Starts `kait serve` on a random port over `storage` and waits until it is healthy.
    pub fn start(storage: &Storage) -> Self {
        Self::start_with(
            storage,
            "127.0.0.1:0",
            &["--retry-schedule", "100ms,200ms,400ms,800ms,1s,1s,1s,1s"],
        )
    }

    /// Starts `kait serve` on `listen` with extra flags.
    pub fn start_with(storage: &Storage, listen: &str, extra: &[&str]) -> Self {
        let mut flags = storage.flags();
        flags.extend(["--admin-token".to_owned(), ADMIN_TOKEN.to_owned()]);
        flags.extend(extra.iter().map(|flag| flag.to_string()));
        let process = ServeProcess::start(
            std::path::Path::new(env!("CARGO_BIN_EXE_kait")),
            listen,
            &flags,
        )
        .expect("kait serve starts and becomes healthy");
        let base_url = process.base_url.clone();
        Self { process, base_url }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_hard(&mut self) {
        self.process.kill_hard().expect("kill -9");
    }
}

impl KaitProcess {
    /// Starts `kait serve` over `storage` with extra flags and environment variables.
    /// A `--blob-url` among `extra` replaces the storage's own.
    pub fn start_with_env(storage: &Storage, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut flags = storage.flags();
        if extra.contains(&"--blob-url")
            && let Some(at) = flags.iter().position(|flag| flag == "--blob-url")
        {
            flags.drain(at..at + 2);
        }
        flags.extend(["--admin-token".to_owned(), ADMIN_TOKEN.to_owned()]);
        flags.extend(extra.iter().map(|flag| flag.to_string()));
        let process = ServeProcess::start_with_env(
            std::path::Path::new(env!("CARGO_BIN_EXE_kait")),
            "127.0.0.1:0",
            &flags,
            env,
        )
        .expect("kait serve starts and becomes healthy");
        let base_url = process.base_url.clone();
        Self { process, base_url }
    }

    /// Resident memory now and at its peak, in MiB.
    pub fn rss_mib(&self) -> (f64, f64) {
        match self.process.rss_mib() {
            (Some(now), Some(peak)) => (now, peak),
            other => panic!("no RSS from /proc: {other:?}"),
        }
    }
}
