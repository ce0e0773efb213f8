//! A RabbitMQ cluster of its own, started from the RabbitMQ installed on
//! this machine: its own node names, ports and data directories, owned by
//! the `rabbitmq` user and sharing that user's Erlang cookie. The machine's
//! own node is never joined, stopped or reconfigured. Dropping the cluster
//! stops its nodes and removes its directories, also when a test fails.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::free_port;
use crate::server_user::{chown_to, command_as, current_user, is_root};

/// The user RabbitMQ's files and processes belong to.
const RABBITMQ_USER: &str = "rabbitmq";
/// Its home, where its Erlang cookie is.
const RABBITMQ_HOME: &str = "/var/lib/rabbitmq";
/// How long a node may take to boot or to join.
const NODE_TIMEOUT_SECS: u64 = 90;

pub struct RabbitNode {
    /// The Erlang node name, `dwtest<id>-<n>@localhost`.
    pub name: String,
    pub amqp_port: u16,
    dist_port: u16,
    dir: PathBuf,
}

pub struct RabbitCluster {
    pub nodes: Vec<RabbitNode>,
    dir: PathBuf,
}

impl RabbitCluster {
    /// Whether this machine can run one: RabbitMQ installed and its user
    /// present, and we are root (to act as that user) or that user.
    pub fn available() -> bool {
        let installed = Command::new("sh")
            .args(["-c", "command -v rabbitmq-server && id rabbitmq"])
            .output()
            .is_ok_and(|output| output.status.success());
        installed && (is_root() || current_user().as_deref() == Some(RABBITMQ_USER))
    }

    /// Start `size` nodes and join them into one cluster. It blocks for the
    /// seconds that takes: call it off the async threads.
    pub fn start(size: usize) -> anyhow::Result<Self> {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let dir = std::env::temp_dir().join(format!("dwtest-rabbit-{id}"));
        std::fs::create_dir_all(&dir).context("creating the cluster's directory")?;
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
        };
        for index in 0..size {
            let node = RabbitNode {
                name: format!("dwtest{id}-{index}@localhost"),
                amqp_port: free_port()?,
                dist_port: free_port()?,
                dir: cluster.dir.join(format!("node{index}")),
            };
            node.write_config()?;
            cluster.nodes.push(node);
        }
        chown_to(RABBITMQ_USER, &cluster.dir)?;
        // Boot in parallel: each takes seconds, mostly the Erlang VM.
        for node in &cluster.nodes {
            node.boot()?;
        }
        for node in &cluster.nodes {
            cluster.wait_for(node)?;
        }
        let first = cluster.nodes[0].name.clone();
        for node in &cluster.nodes[1..] {
            cluster.ctl(node, &["stop_app"])?;
            cluster.ctl(node, &["join_cluster", &first])?;
            cluster.ctl(node, &["start_app"])?;
        }
        cluster.ctl(
            &cluster.nodes[0],
            &[
                "await_online_nodes",
                &size.to_string(),
                "--timeout",
                &NODE_TIMEOUT_SECS.to_string(),
            ],
        )?;
        Ok(cluster)
    }

    /// The AMQP URL of one node.
    pub fn amqp_url(&self, index: usize) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f",
            self.nodes[index].amqp_port
        )
    }

    /// Every node's URL, comma-separated, in this order: what `AMQP_URL`
    /// takes.
    pub fn amqp_urls(&self, order: &[usize]) -> String {
        order
            .iter()
            .map(|index| self.amqp_url(*index))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kill one node (its Erlang VM, SIGKILL): a crash, or the machine
    /// going away. Its clients' connections drop at once, with no goodbye.
    pub fn kill_node(&self, index: usize) -> anyhow::Result<()> {
        let pid = std::fs::read_to_string(self.nodes[index].dir.join("pid"))
            .context("reading the node's pid file")?;
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .context("kill")?;
        if !status.success() {
            bail!("could not kill {}", self.nodes[index].name);
        }
        Ok(())
    }

    /// Start a killed node again; it rejoins the cluster it was in.
    pub fn restart_node(&self, index: usize) -> anyhow::Result<()> {
        let node = &self.nodes[index];
        node.boot()?;
        self.wait_for(node)?;
        self.ctl(
            &self.nodes[index],
            &[
                "await_online_nodes",
                &self.nodes.len().to_string(),
                "--timeout",
                &NODE_TIMEOUT_SECS.to_string(),
            ],
        )
        .map(drop)
    }

    /// The index of the node leading quorum queue `queue`, asked of node
    /// `via`.
    pub fn leader_of(&self, queue: &str, via: usize) -> anyhow::Result<usize> {
        let output = self.ctl(
            &self.nodes[via],
            &[
                "list_queues",
                "-p",
                "/",
                "name",
                "leader",
                "--formatter",
                "json",
                "--quiet",
            ],
        )?;
        let queues: Vec<serde_json::Value> =
            serde_json::from_slice(&output.stdout).context("list_queues prints JSON")?;
        let leader = queues
            .iter()
            .find(|entry| entry["name"] == queue)
            .and_then(|entry| entry["leader"].as_str())
            .with_context(|| format!("no leader listed for {queue}"))?;
        self.nodes
            .iter()
            .position(|node| node.name == leader)
            .with_context(|| format!("the leader {leader} is not one of the cluster's nodes"))
    }

    /// Wait until a node that was just booted runs (`rabbitmqctl wait`
    /// waits for its pid file, then for the node to start).
    fn wait_for(&self, node: &RabbitNode) -> anyhow::Result<()> {
        let pid_file = node.dir.join("pid").display().to_string();
        self.ctl(
            node,
            &[
                "wait",
                &pid_file,
                "--timeout",
                &NODE_TIMEOUT_SECS.to_string(),
            ],
        )
        .map(drop)
    }

    /// How many client connections node `index` holds: those made to its
    /// AMQP port (the listing covers the whole cluster).
    pub fn connections_on(&self, index: usize) -> anyhow::Result<usize> {
        let node = &self.nodes[index];
        let output = self.ctl(
            node,
            &["list_connections", "port", "--formatter", "json", "--quiet"],
        )?;
        let connections: Vec<serde_json::Value> =
            serde_json::from_slice(&output.stdout).context("list_connections prints JSON")?;
        Ok(connections
            .iter()
            .filter(|connection| connection["port"] == node.amqp_port)
            .count())
    }

    /// `rabbitmqctl` against one node, as the `rabbitmq` user.
    fn ctl(&self, node: &RabbitNode, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = as_rabbitmq("rabbitmqctl");
        command.args(["-n", &node.name]).args(args);
        let output = command.output().context("running rabbitmqctl")?;
        if !output.status.success() {
            bail!(
                "rabbitmqctl -n {} {}: {}{}",
                node.name,
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            // `stop` waits for the node to halt; a node already stopped
            // answers at once that it is not running.
            let _ = as_rabbitmq("rabbitmqctl")
                .args(["-n", &node.name, "stop"])
                .output();
            if let Ok(pid) = std::fs::read_to_string(node.dir.join("pid")) {
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RabbitNode {
    /// The node's own configuration: its listener on loopback, no plugins,
    /// and an environment file that does not inherit the machine node's.
    fn write_config(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::write(
            self.dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{}\nloopback_users = none\n",
                self.amqp_port
            ),
        )?;
        std::fs::write(self.dir.join("enabled_plugins"), "[].\n")?;
        std::fs::write(
            self.dir.join("rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS=127.0.0.1\n",
        )?;
        Ok(())
    }

    fn boot(&self) -> anyhow::Result<()> {
        let dir = |name: &str| self.dir.join(name).display().to_string();
        let status = as_rabbitmq("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONF_ENV_FILE", dir("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", dir("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", dir("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir("log"))
            .env("RABBITMQ_PID_FILE", dir("pid"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .status()
            .context("starting rabbitmq-server")?;
        if !status.success() {
            bail!(
                "rabbitmq-server -detached for {} failed: {status}",
                self.name
            );
        }
        Ok(())
    }
}

/// `program` run as the `rabbitmq` user, with its home (and so its cookie).
fn as_rabbitmq(program: &str) -> Command {
    let mut command = command_as(RABBITMQ_USER, program);
    command.env("HOME", RABBITMQ_HOME);
    command
}

/// Bound a whole cluster test: it must end, and clean up, even if a node
/// hangs.
pub const CLUSTER_TEST_TIMEOUT: Duration = Duration::from_secs(300);
