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
        wait_until_healthy(&base_url);
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

/// The address is printed as soon as the socket is bound; the API answers once the store is
/// open and migrated. Waits (bounded) for `GET /api/v1/health` to say so.
fn wait_until_healthy(base_url: &str) {
    use std::io::{Read, Write};
    let address = base_url.trim_start_matches("http://");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = std::net::TcpStream::connect(address).and_then(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                stream,
                "GET /api/v1/health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
            )?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        });
        if answer.is_ok_and(|response| response.starts_with("HTTP/1.1 204")) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kait at {base_url} never became healthy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
