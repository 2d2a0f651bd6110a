//! The `kait` binary as a child process, for tests that must kill it (`kill -9`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{ADMIN_TOKEN, Storage};

pub struct KaitProcess {
    child: Child,
    pub base_url: String,
}

impl KaitProcess {
    /// Starts `kait serve` on a random port over `storage` and waits until it listens.
    pub fn start(storage: &Storage) -> Self {
        Self::start_with(
            storage,
            "127.0.0.1:0",
            &["--retry-schedule", "100ms,200ms,400ms,800ms,1s,1s,1s,1s"],
        )
    }

    /// Starts `kait serve` on `listen` with extra flags.
    pub fn start_with(storage: &Storage, listen: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kait"))
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .args(storage.flags())
            .arg("--admin-token")
            .arg(ADMIN_TOKEN)
            .arg("--allow-network")
            .arg("127.0.0.0/8")
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the kait binary starts");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = line.strip_prefix("kait listening on ") {
                    let _ = sender.send(address.to_owned());
                }
            }
        });
        let base_url = receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("kait prints its address within 30 s");
        Self { child, base_url }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_hard(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for KaitProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
