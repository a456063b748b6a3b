//! A real etcd server for tests (feature `etcd`).

use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A real `etcd` (Debian's etcd-server) on 127.0.0.1 with ephemeral ports and a temporary data
/// dir. Killed by its process id when stopped or dropped.
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// How long a start may take on a loaded machine.
    const START_TIMEOUT: Duration = Duration::from_secs(30);

    /// Starts etcd and waits until it serves requests. Retries with other ports when one was
    /// taken between choosing and binding it.
    pub async fn start() -> EtcdServer {
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut server = EtcdServer {
                child: None,
                dir: tempfile::tempdir().expect("temp dir"),
                client_port: free_port(),
                peer_port: free_port(),
            };
            if server.client_port == server.peer_port {
                continue;
            }
            match server.launch().await {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// Kills etcd (SIGKILL by pid) and waits for it to exit. The data dir stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data dir.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await.expect("etcd restart");
    }

    /// Starts a new, empty etcd on the same ports: the data dir is wiped (an etcd that lost its
    /// data, or was replaced).
    pub async fn restart_empty(&mut self) {
        self.stop();
        std::fs::remove_dir_all(self.dir.path().join("data")).expect("wipe the data dir");
        self.launch().await.expect("etcd restart");
    }

    /// A client connected directly (not through any proxy).
    pub async fn client(&self) -> tideway_registry::etcd_client::Client {
        tideway_registry::etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("etcd client")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let _ = f.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }

    async fn launch(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| e.to_string())?;
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--initial-cluster-state=new")
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run etcd (scripts/install-deps etcd=etcd-server): {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Self::START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("etcd exited with {status}:\n{}", self.log_tail()));
            }
            if self.healthy().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!("etcd not healthy in time:\n{}", self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A linearizable read works: etcd is up and has a leader.
    async fn healthy(&self) -> bool {
        let probe = async {
            let mut client =
                tideway_registry::etcd_client::Client::connect([self.endpoint()], None)
                    .await
                    .ok()?;
            client.get("/health-probe", None).await.ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), probe).await,
            Ok(Some(_))
        )
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
