//! Real etcd servers for tests (Debian's `etcd-server`, 3.4): one member or a cluster, on
//! 127.0.0.1 with ephemeral ports and a temporary data dir, stopped by process id.

use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, http};

/// How long a start may take on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts with fresh ports when a chosen port was taken before etcd bound it.
const START_ATTEMPTS: usize = 5;
/// Deadline of one health or status probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Raft timing of one member: fast failure detection for tests, but an election timeout long
/// enough that a loaded 2-core machine does not trigger elections by itself.
const SINGLE_TIMING: (u32, u32) = (50, 500);
/// A cluster's members also exchange heartbeats with each other under load: more slack.
const CLUSTER_TIMING: (u32, u32) = (100, 1000);

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }
}

/// A real etcd cluster of `n` members on 127.0.0.1, bootstrapped with `--initial-cluster`, each
/// with its own client and peer port and data dir under one temporary directory. Members can be
/// killed (SIGKILL by pid) and started again on the same ports and data dir. Every member still
/// running is killed when this is dropped.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    timing: (u32, u32),
}

impl EtcdCluster {
    /// Starts `size` members and waits until every one is healthy (a leader is elected and a
    /// quorum read works through each). Retries with other ports when one was taken between
    /// choosing and binding it. Panics when etcd cannot be started.
    pub fn start(size: usize) -> EtcdCluster {
        assert!(size >= 1, "a cluster has at least one member");
        let timing = if size == 1 {
            SINGLE_TIMING
        } else {
            CLUSTER_TIMING
        };
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut ports: Vec<u16> = Vec::new();
            while ports.len() < 2 * size {
                let port = free_port();
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
            let members = (0..size)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    child: None,
                })
                .collect();
            let mut cluster = EtcdCluster {
                members,
                dir: tempfile::tempdir().expect("temp dir"),
                timing,
            };
            let launched = (0..size).try_for_each(|i| cluster.launch(i));
            let healthy = launched.and_then(|()| {
                let deadline = Instant::now() + START_TIMEOUT;
                (0..size).try_for_each(|i| cluster.wait_healthy(i, deadline))
            });
            match healthy {
                Ok(()) => return cluster,
                Err(e) => {
                    last_error = e;
                    for i in 0..size {
                        cluster.kill(i);
                    }
                }
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    /// Number of members (running or not).
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The client URL of member `i`, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    /// The client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// The client address of member `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.members[i].addr()
    }

    /// The process id of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Kills member `i` (SIGKILL by pid) and reaps it. Its data dir stays.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again (killing it first if it runs) on the same ports and data dir,
    /// and waits until it is healthy (back in the cluster, with a leader).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let deadline = Instant::now() + START_TIMEOUT;
        self.launch(i)
            .and_then(|()| self.wait_healthy(i, deadline))
            .unwrap_or_else(|e| panic!("etcd member {i} did not restart: {e}"));
    }

    /// Whether member `i` answers `/health` with `true`: it runs, there is a leader and a
    /// quorum read works.
    pub fn is_healthy(&self, i: usize) -> bool {
        http::request(self.addr(i), "GET", "/health", None, PROBE_TIMEOUT)
            .is_ok_and(|r| r.status == 200 && r.body.contains(r#""health":"true""#))
    }

    /// The index of the leader, as the running members report it (`/v3/maintenance/status`);
    /// `None` while there is none or no running member answers.
    pub fn leader(&self) -> Option<usize> {
        let statuses: Vec<(usize, u64, u64)> = (0..self.size())
            .filter(|&i| self.members[i].child.is_some())
            .filter_map(|i| {
                let (id, leader) = self.status(i)?;
                Some((i, id, leader))
            })
            .collect();
        let leader = statuses.iter().map(|&(_, _, l)| l).find(|&l| l != 0)?;
        statuses
            .iter()
            .find(|&&(_, id, _)| id == leader)
            .map(|&(i, _, _)| i)
    }

    /// (member id, leader id) as member `i` reports them.
    fn status(&self, i: usize) -> Option<(u64, u64)> {
        let response = http::request(
            self.addr(i),
            "POST",
            "/v3/maintenance/status",
            Some("{}"),
            PROBE_TIMEOUT,
        )
        .ok()?;
        let json: serde_json::Value = serde_json::from_str(&response.body).ok()?;
        // The JSON gateway writes uint64 fields as strings.
        let number = |v: &serde_json::Value| v.as_str()?.parse::<u64>().ok();
        Some((
            number(&json["header"]["member_id"])?,
            number(&json["leader"])?,
        ))
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    /// The last 2 KB of member `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.log_path(i)) {
            let _ = f.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }

    fn launch(&mut self, i: usize) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .map_err(|e| e.to_string())?;
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let (heartbeat, election) = self.timing;
        let member = &self.members[i];
        let client_url = member.client_url();
        let peer_url = member.peer_url();
        let child = Command::new("etcd")
            .arg(format!("--name={}", member.name))
            .arg(format!("--data-dir={}", self.data_dir(i).display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg("--initial-cluster-state=new")
            // Unique per cluster: members of two tests can never join each other.
            .arg(format!(
                "--initial-cluster-token=tideway-test-{}-{}",
                std::process::id(),
                self.members[0].peer_port
            ))
            .arg(format!("--heartbeat-interval={heartbeat}"))
            .arg(format!("--election-timeout={election}"))
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run etcd (scripts/install-deps etcd=etcd-server): {e}"))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    fn wait_healthy(&mut self, i: usize, deadline: Instant) -> Result<(), String> {
        loop {
            if let Some(child) = self.members[i].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.members[i].child = None;
                return Err(format!(
                    "etcd member {i} exited with {status}:\n{}",
                    self.log_tail(i)
                ));
            }
            if self.is_healthy(i) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "etcd member {i} not healthy in time:\n{}",
                    self.log_tail(i)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A real etcd with one member on 127.0.0.1, ephemeral ports and a temporary data dir. Killed
/// by its process id when stopped or dropped.
#[derive(Debug)]
pub struct EtcdServer {
    cluster: EtcdCluster,
}

impl EtcdServer {
    /// Starts etcd and waits until it serves requests.
    pub fn start() -> EtcdServer {
        EtcdServer {
            cluster: EtcdCluster::start(1),
        }
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        self.cluster.endpoint(0)
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        self.cluster.addr(0)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.cluster.pid(0)
    }

    /// Kills etcd (SIGKILL by pid) and waits for it to exit. The data dir stays.
    pub fn stop(&mut self) {
        self.cluster.kill(0);
    }

    /// Starts etcd again on the same ports and data dir; waits until it serves requests.
    pub fn restart(&mut self) {
        self.cluster.restart(0);
    }

    /// Starts a new, empty etcd on the same ports: the data dir is wiped (an etcd that lost its
    /// data, or was replaced).
    pub fn restart_empty(&mut self) {
        self.cluster.kill(0);
        std::fs::remove_dir_all(self.cluster.data_dir(0)).expect("wipe the data dir");
        self.cluster.restart(0);
    }

    /// Whether etcd answers `/health` with `true`.
    pub fn is_healthy(&self) -> bool {
        self.cluster.is_healthy(0)
    }

    /// The last 2 KB of etcd's log.
    pub fn log_tail(&self) -> String {
        self.cluster.log_tail(0)
    }
}
