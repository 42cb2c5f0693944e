//! A real PyKMIP server for one test, started by scripts/kmip-server.sh in a
//! temporary directory and stopped (process group killed) on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wrapcrypt_kmip::client::ClientIdentity;
use wrapcrypt_kmip::ClientConfig;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kmip-server.sh")
}

fn launch(dir: &Path) -> (u16, Duration) {
    let t = Instant::now();
    let out = Command::new("bash")
        .arg(script())
        .arg("start")
        .arg(dir)
        .output()
        .expect("run scripts/kmip-server.sh");
    let start_time = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "PyKMIP server did not start (scripts/install-deps.sh installs it): {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let port = stdout
        .lines()
        .find_map(|l| l.strip_prefix("port="))
        .and_then(|p| p.trim().parse().ok())
        .expect("port=N from kmip-server.sh");
    (port, start_time)
}

pub struct KmipServer {
    dir: tempfile::TempDir,
    pub port: u16,
    pub start_time: Duration,
}

impl KmipServer {
    pub fn start(test: &str) -> KmipServer {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kmip-{test}-"))
            .tempdir()
            .expect("temporary directory");
        let (port, start_time) = launch(dir.path());
        eprintln!("{test}: PyKMIP server on 127.0.0.1:{port} started in {start_time:.2?} (certificates included)");
        KmipServer {
            dir,
            port,
            start_time,
        }
    }

    /// Stops the server, keeping its certificates and database.
    pub fn stop(&self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }

    /// Starts the stopped server again on the same database (on a new port).
    pub fn restart(&mut self) {
        let (port, t) = launch(self.dir.path());
        eprintln!("PyKMIP server restarted on 127.0.0.1:{port} in {t:.2?}");
        self.port = port;
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A client configuration with the certificate pair `NAME.pem`/`NAME.key`.
    pub fn config_as(&self, name: &str) -> ClientConfig {
        let mut c = ClientConfig::new(
            "127.0.0.1",
            self.port,
            &self.path("ca.pem"),
            &self.path(&format!("{name}.pem")),
            &self.path(&format!("{name}.key")),
        );
        c.timeout = Duration::from_secs(20);
        c
    }

    pub fn config(&self) -> ClientConfig {
        self.config_as("client")
    }

    pub fn config_without_certificate(&self) -> ClientConfig {
        let mut c = self.config();
        c.identity = None;
        c
    }

    pub fn identity(&self, name: &str) -> ClientIdentity {
        ClientIdentity {
            cert: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}.key")),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }
}

impl Drop for KmipServer {
    fn drop(&mut self) {
        self.stop();
    }
}
