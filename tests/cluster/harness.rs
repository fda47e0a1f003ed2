//! Three nats-server processes on loopback forming the cluster of
//! `nats/cluster/nats-{1,2,3}.conf`: the committed files, with free ports
//! put in place of theirs, each node with its own store directory and log.
//! A node can be stopped (SIGTERM), killed (SIGKILL) and started again on
//! the same ports and store, as an orchestrator would restart it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use serde_json::Value;
use tokio::time::Instant;

use crate::helpers::{TempDir, free_port, nats_server_bin};

/// Only one cluster test runs at a time: three clusters electing leaders on
/// two cores at once would measure the machine, not the service.
static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().await
}

/// The ports each committed file uses, in the order client, cluster,
/// monitoring.
const FILE_PORTS: [[u16; 3]; 3] = [[4231, 6231, 8231], [4232, 6232, 8232], [4233, 6233, 8233]];

pub struct Node {
    pub name: String,
    pub client_port: u16,
    pub http_port: u16,
    config: PathBuf,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_len(&self) -> usize {
        std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log file");
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&self.config)
            .env("NATS_STORE_DIR", &self.store)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    _dir: TempDir,
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// `nats/cluster/nats-<n>.conf` with every port of the committed files
/// replaced by the matching one of `ports`.
fn config_with_ports(n: usize, ports: &[[u16; 3]; 3]) -> String {
    let path = repo_path(&format!("nats/cluster/nats-{n}.conf"));
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing: {e}", path.display()));
    let address = |port: u16| format!("127.0.0.1:{port}");
    // The node's own client, cluster and monitoring ports, and every
    // node's route: a file laid out otherwise would run on the wrong ports.
    let own = FILE_PORTS[n - 1];
    for port in own.iter().chain(FILE_PORTS.iter().map(|p| &p[1])) {
        assert!(
            text.contains(&address(*port)),
            "{} does not use {}",
            path.display(),
            address(*port)
        );
    }
    // Through placeholders, so a new port that begins like an old one is
    // not replaced again.
    for (i, file) in FILE_PORTS.iter().enumerate() {
        for (j, port) in file.iter().enumerate() {
            text = text.replace(&address(*port), &format!("@{i}.{j}@"));
        }
    }
    for (i, ours) in ports.iter().enumerate() {
        for (j, port) in ours.iter().enumerate() {
            text = text.replace(&format!("@{i}.{j}@"), &address(*port));
        }
    }
    text
}

impl Cluster {
    /// Starts the three nodes and waits until they have elected a
    /// JetStream meta leader.
    pub async fn start() -> Self {
        let mut last = String::new();
        // A free port can be taken by someone else before the node binds it.
        for _ in 0..3 {
            let dir = TempDir::new();
            let ports: [[u16; 3]; 3] =
                std::array::from_fn(|_| [free_port(), free_port(), free_port()]);
            let mut nodes = Vec::new();
            for (i, own) in ports.iter().enumerate() {
                let n = i + 1;
                let config = dir.path().join(format!("nats-{n}.conf"));
                std::fs::write(&config, config_with_ports(n, &ports)).expect("write node config");
                let store = dir.path().join(format!("store-{n}"));
                std::fs::create_dir_all(&store).expect("store dir");
                nodes.push(Node {
                    name: format!("nats-{n}"),
                    client_port: own[0],
                    http_port: own[2],
                    config,
                    store,
                    log: dir.path().join(format!("nats-{n}.log")),
                    child: None,
                });
            }
            let mut cluster = Cluster { nodes, _dir: dir };
            for node in &mut cluster.nodes {
                node.spawn();
            }
            match cluster.wait_all_ready(Duration::from_secs(20)).await {
                Ok(()) => {
                    cluster.wait_meta_leader(Duration::from_secs(30)).await;
                    return cluster;
                }
                Err(e) => last = e,
            }
        }
        panic!("the three-node cluster did not start: {last}");
    }

    async fn wait_all_ready(&mut self, within: Duration) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.wait_ready(i, 0, within).await?;
        }
        Ok(())
    }

    /// Waits until node `i` logged "Server is ready" after byte `from` of
    /// its log (its own log, so a stranger on a reused port cannot fool us).
    async fn wait_ready(&mut self, i: usize, from: usize, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let node = &mut self.nodes[i];
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                node.child = None;
                return Err(format!("{} exited ({status}):\n{}", node.name, node.log()));
            }
            let log = node.log();
            if log
                .get(from..)
                .is_some_and(|l| l.contains("Server is ready"))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{} not ready in {within:?}:\n{log}", node.name));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every node's client URL, comma-separated (a `NATS_URL`).
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// SIGKILL: the process dies at once, mid-write, as in a crash.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: nats-server shuts down cleanly (flushes, closes its routes).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts a stopped or killed node again, on its ports and its store.
    pub async fn start_node(&mut self, i: usize) {
        assert!(!self.nodes[i].is_running(), "{} runs", self.nodes[i].name);
        let from = self.nodes[i].log_len();
        // The kernel may hold a killed node's port for a moment.
        for _ in 0..5 {
            self.nodes[i].spawn();
            match self.wait_ready(i, from, Duration::from_secs(20)).await {
                Ok(()) => return,
                Err(e) if e.contains("address already in use") => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("restarting {}: {e}", self.nodes[i].name),
            }
        }
        panic!("{} cannot bind its ports again", self.nodes[i].name);
    }

    /// `/jsz` of a running node.
    async fn jsz(&self, i: usize) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}/jsz", self.nodes[i].http_port);
        let reply = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        reply.json().await.ok()
    }

    /// Waits until every running node names the same JetStream meta leader.
    pub async fn wait_meta_leader(&self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for (i, node) in self.nodes.iter().enumerate() {
                if node.is_running() {
                    let leader = self
                        .jsz(i)
                        .await
                        .and_then(|j| j["meta_cluster"]["leader"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    seen.push(leader);
                }
            }
            if let Some(first) = seen.first()
                && !first.is_empty()
                && seen.iter().all(|l| l == first)
            {
                return first.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no meta leader within {within:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client connected to the running nodes only.
    pub async fn client(&self) -> async_nats::Client {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(Node::url)
            .collect();
        client_of(&urls).await
    }

    /// The stream's `cluster` info as one running node answers it.
    pub async fn stream_cluster(&self, stream: &str) -> Option<jetstream::stream::ClusterInfo> {
        let client = self.client().await;
        let js = jetstream::new(client);
        let asked = async {
            let mut s = js.get_stream(stream).await.ok()?;
            s.info().await.ok()?.cluster.clone()
        };
        tokio::time::timeout(Duration::from_secs(3), asked)
            .await
            .ok()
            .flatten()
    }

    /// The stream leader's server name, if it has one now.
    pub async fn stream_leader(&self, stream: &str) -> Option<String> {
        self.stream_cluster(stream)
            .await
            .and_then(|c| c.leader)
            .filter(|l| !l.is_empty())
    }

    /// Waits until the stream has a leader and every replica on a running
    /// node is current, so the next fault starts from a healthy cluster.
    pub async fn wait_stream_healthy(&self, stream: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let running: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.name.as_str())
            .collect();
        loop {
            let info = self.stream_cluster(stream).await;
            if let Some(info) = &info
                && let Some(leader) = info.leader.as_deref().filter(|l| !l.is_empty())
            {
                let followers_current = running.iter().filter(|n| **n != leader).all(|name| {
                    info.replicas
                        .iter()
                        .any(|r| r.name == *name && r.current && !r.offline)
                });
                if followers_current {
                    return leader.to_string();
                }
            }
            assert!(
                Instant::now() < deadline,
                "stream {stream} not healthy within {within:?}: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks the stream leader to step down until another node than `not`
    /// leads (bounded), so a fault on `not` is not also a leader loss.
    pub async fn move_stream_leader(&self, stream: &str, not: &str) -> String {
        let client = self.client().await;
        for _ in 0..5 {
            let leader = self
                .wait_stream_healthy(stream, Duration::from_secs(30))
                .await;
            if leader != not {
                return leader;
            }
            let _ = client
                .request(
                    format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                    "".into(),
                )
                .await;
            let deadline = Instant::now() + Duration::from_secs(15);
            while self.stream_leader(stream).await.as_deref() == Some(not)
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("{not} kept the leadership of {stream}");
    }

    /// The end of every node's log, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = n.log();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                format!("----- {} (last lines) -----\n{tail}", n.name)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        // A failed test tells what the nodes said.
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Connects to any of `urls` (async-nats takes a list, not a comma-separated
/// string), reconnecting for ever, with short request timeouts.
pub async fn client_of(urls: &[String]) -> async_nats::Client {
    let addrs: Vec<&str> = urls.iter().map(String::as_str).collect();
    async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .request_timeout(Some(Duration::from_secs(3)))
        .connect(addrs.as_slice())
        .await
        .expect("test client connects to the cluster")
}
