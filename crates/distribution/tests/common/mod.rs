//! Helpers shared by the integration tests: a registry server on 127.0.0.1 with an
//! ephemeral port that stops when its guard drops.
#![allow(dead_code)]

use std::path::Path;

/// A running in-process registry server; aborted on drop.
pub struct Server {
    pub base: String,
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts our registry over `root` on 127.0.0.1:0.
pub async fn start_server(root: &Path, htpasswd: Option<&Path>) -> Server {
    let app = distribution::server::router(root, htpasswd).expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = distribution::server::serve_listener(listener, app).await;
    });
    Server {
        base: format!("http://{addr}"),
        addr,
        task,
    }
}

/// `sha256:<hex>` of data.
pub fn digest(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Writes an htpasswd file with one bcrypt entry using Apache's `htpasswd -Bbn`.
pub fn write_htpasswd(path: &Path, user: &str, pass: &str) {
    let out = std::process::Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .expect("run htpasswd (apache2-utils)");
    assert!(out.status.success(), "htpasswd failed");
    std::fs::write(path, out.stdout).unwrap();
}
