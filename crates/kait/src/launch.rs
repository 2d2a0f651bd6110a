//! `kait serve` as a child process: the launcher `kait bench` measures and the integration
//! tests kill with SIGKILL. It waits until the server listens and answers its health route,
//! and reads the child's memory and CPU from `/proc`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a server may take to listen and then to become healthy (migrations included).
const START_WITHIN: Duration = Duration::from_secs(30);

/// A running `kait serve`; killed when dropped.
pub struct ServeProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`, as the server printed it.
    pub base_url: String,
}

impl ServeProcess {
    /// Starts `binary serve --listen <listen> --allow-network 127.0.0.0/8 <flags>` and waits
    /// until it answers `GET /api/v1/health`.
    pub fn start(binary: &Path, listen: &str, flags: &[String]) -> anyhow::Result<Self> {
        Self::start_with_env(binary, listen, flags, &[])
    }

    /// [`ServeProcess::start`] with extra environment variables (e.g. a bucket's `AWS_*`).
    pub fn start_with_env(
        binary: &Path,
        listen: &str,
        flags: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .args([
                "serve",
                "--listen",
                listen,
                "--allow-network",
                "127.0.0.0/8",
            ])
            .args(flags)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} serve", binary.display()))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let (sender, receiver) = std::sync::mpsc::channel();
        // Reads the address, then keeps draining stdout so the child never blocks on a pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = line.strip_prefix("kait listening on ") {
                    let _ = sender.send(address.to_owned());
                }
            }
        });
        let mut process = Self {
            child,
            base_url: String::new(),
        };
        process.base_url = receiver
            .recv_timeout(START_WITHIN)
            .context("kait serve exited or did not listen within 30 s")?;
        wait_until_healthy(&process.base_url)?;
        Ok(process)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_hard(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("kill -9")?;
        self.child.wait().context("reaping the server")?;
        Ok(())
    }

    /// Resident set size now and at its peak, in MiB, from /proc (Linux only).
    pub fn rss_mib(&self) -> (Option<f64>, Option<f64>) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
        else {
            return (None, None);
        };
        let field = |name: &str| {
            status
                .lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
                .map(|kib| kib / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// User plus system CPU time the process has used, in seconds, from /proc (Linux only).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        cpu_seconds_from_stat(&stat)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds (the unit is USER_HZ, 100 on Linux).
pub fn cpu_seconds_from_stat(stat: &str) -> Option<f64> {
    Some((stat_field(stat, 11)? + stat_field(stat, 12)?) as f64 / 100.0)
}

/// A numeric field of a `/proc/<pid>/stat` line, counted from the state (0) on: the command
/// name before it may hold spaces, so fields start after its closing parenthesis.
pub fn stat_field(stat: &str, index: usize) -> Option<u64> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(index)?
        .parse()
        .ok()
}

/// The address is printed as soon as the socket is bound; the API answers once the store is
/// open and migrated. Waits (bounded) for `GET /api/v1/health` to say so.
fn wait_until_healthy(base_url: &str) -> anyhow::Result<()> {
    let address = base_url.trim_start_matches("http://");
    let deadline = Instant::now() + START_WITHIN;
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
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("kait at {base_url} never became healthy");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
