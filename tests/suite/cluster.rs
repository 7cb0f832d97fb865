//! Redis Cluster (issue 24): a run, its workers and `status` on a cluster of their own (three
//! masters and three replicas on free loopback ports, made with `redis-cli --cluster create`),
//! and the seed-node mistakes that must stop a run at once.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mock_gemini::start_blocking;

use crate::common::{self, RedisServer, free_port};
use crate::redis::{
    assert_quick_user_error, assert_same_as_a_run_alone, spawn, start_worker, status_json,
    stop_worker, text,
};

/// A Redis Cluster of a test: `masters` masters with `replicas` replicas each, every node a
/// [`RedisServer`] in cluster mode (its bus on another free port). Killed when dropped.
pub(crate) struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    password: Option<String>,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize, password: Option<&str>) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                let bus = free_port().to_string();
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    // A replica takes over however long ago it last heard its master (the
                    // default refuses one that lost touch for long, on a machine under load).
                    "--cluster-replica-validity-factor",
                    "0",
                    "--cluster-port",
                    &bus,
                ];
                if let Some(p) = password {
                    args.extend(["--requirepass", p, "--masterauth", p]);
                }
                RedisServer::start_with(&args)
            })
            .collect();
        let mut create = Command::new("redis-cli");
        if let Some(p) = password {
            create.args(["-a", p, "--no-auth-warning"]);
        }
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}): install it: apt-get install -y redis-tools")
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster {
            nodes,
            password: password.map(str::to_owned),
        };
        cluster.wait_until_ok(masters * (1 + replicas));
        cluster
    }

    /// Waits until every node says `cluster_state:ok` and knows all `count` nodes, and every
    /// replica is in touch with its master.
    fn wait_until_ok(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = (0..self.nodes.len()).all(|i| {
                let mut c = self.connection(i);
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap();
                let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c).unwrap();
                let replication: String =
                    redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
                info.contains("cluster_state:ok")
                    && nodes.lines().count() == count
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The URL of node `i` (with the password, when the cluster has one).
    pub fn url(&self, i: usize) -> String {
        match &self.password {
            // A password's `/` is percent-encoded in a URL (README, distributed.redis_url).
            Some(p) => format!(
                "redis://:{}@127.0.0.1:{}/",
                p.replace('/', "%2F"),
                self.nodes[i].port
            ),
            None => self.nodes[i].url(),
        }
    }

    /// A plain connection to node `i` alone (no redirections followed).
    pub fn connection(&self, i: usize) -> redis::Connection {
        redis::Client::open(self.url(i))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// The indices of the nodes that answer and are masters now.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                let Ok(mut c) = redis::Client::open(self.url(i)).and_then(|c| c.get_connection())
                else {
                    return false;
                };
                let role: redis::RedisResult<redis::Value> = redis::cmd("ROLE").query(&mut c);
                matches!(&role, Ok(redis::Value::Array(a))
                    if matches!(a.first(), Some(redis::Value::BulkString(b)) if b == b"master"))
            })
            .collect()
    }

    /// The master that holds a run's queued tasks, as soon as there is one (within 20 s).
    pub fn holder_of_the_queue(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let holder = self
                .masters()
                .into_iter()
                .find(|&m| self.keys_on(m, "puzzlegen:queue:*:tasks") > 0);
            if let Some(m) = holder {
                return m;
            }
            assert!(Instant::now() < deadline, "the run never queued its tasks");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many keys matching `pattern` node `i` holds itself.
    pub fn keys_on(&self, i: usize, pattern: &str) -> usize {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.connection(i))
            .unwrap();
        keys.len()
    }
}

/// A coordinator on one node of a password-protected cluster (the password from
/// `REDIS_PASSWORD`) and two workers given other nodes: the puzzles of a run alone, no text
/// paid twice, no 429, vectors on every master, and `status` reads the whole cluster.
#[test]
fn a_coordinator_and_two_workers_on_a_cluster_make_the_puzzles_of_a_run_alone() {
    let cluster = RedisCluster::start(3, 1, Some("clu5ter-pw"));
    let server = start_blocking(common::quota_mock_config()).unwrap();
    let limits = "  requests_per_minute: 1200\n  rpm_counts: items\n";
    let workers: Vec<_> = [2, 4]
        .into_iter()
        .map(|i| start_worker(&server.base_url(), &cluster.url(i), limits))
        .collect();
    let coordinator = common::gemini_dir(&server.base_url(), 12, 14, 3, limits);
    let bare = format!("redis://127.0.0.1:{}/", cluster.nodes[0].port);
    let out = common::puzzlegen(coordinator.path())
        .args(["run", "--config", "params.yaml", "--redis", &bare])
        .env("REDIS_PASSWORD", "clu5ter-pw")
        .output()
        .unwrap();
    let status = status_json(&cluster.url(1));
    let logs: Vec<String> = workers.into_iter().map(|(_, c)| stop_worker(c)).collect();
    assert_eq!(out.status.code(), Some(0), "{}\n{logs:?}", text(&out));
    assert!(!text(&out).contains("clu5ter-pw"), "{}", text(&out));
    let s = server.stats();
    assert_eq!(s.responses_429, 0, "{s:?}");
    assert!(s.max_texts_in_any_60s <= 120, "{s:?}");
    assert_eq!(s.duplicate_texts, 0, "{s:?}");
    assert_eq!(s.distinct_texts_embedded, 12 * 15, "{s:?}");
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    for &m in &masters {
        assert!(
            cluster.keys_on(m, "puzzlegen:vec:*") > 0,
            "master {m} holds no vector: the tier is not spread"
        );
    }
    assert_eq!(status["cluster_masters"], 3, "{status}");
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{status}");
    assert_eq!(runs[0]["tasks"], 12, "{status}");
    assert_eq!(runs[0]["done"], 12, "{status}");
    let workers = status["workers"].as_array().unwrap();
    assert!(workers.len() >= 2, "both workers' heartbeats: {status}");
    assert_eq!(status["limiters"].as_array().unwrap().len(), 1, "{status}");
    assert_same_as_a_run_alone(coordinator.path(), &server.base_url(), 12, 3, limits);
}

/// Seed nodes that cannot be one cluster stop the run at once (exit 2, one line naming the
/// nodes, no password): a single server beside a cluster node, in either order; two servers
/// that are not clusters; nodes of two different clusters.
#[test]
fn seed_nodes_of_two_clusters_or_of_no_cluster_are_refused() {
    let a = RedisCluster::start(3, 0, None);
    let b = RedisCluster::start(3, 0, Some("Top/Secret"));
    let single = RedisServer::start();
    let other = RedisServer::start();
    let dir = common::gemini_dir("http://127.0.0.1:9", 1, 6, 1, "");
    let run = |url: &str, nodes: &[String]| {
        let params = dir.path().join("params.yaml");
        let text = std::fs::read_to_string(&params).unwrap();
        let text = text.split("distributed:").next().unwrap().to_owned();
        let list: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
        std::fs::write(
            &params,
            format!(
                "{text}distributed:\n  redis_url: \"{url}\"\n  redis_nodes: [{}]\n",
                list.join(", ")
            ),
        )
        .unwrap();
        let mut cmd = common::command(dir.path());
        cmd.args(["run", "--config", "params.yaml"]);
        cmd
    };
    assert_quick_user_error(
        run(&a.url(0), &[single.url()]),
        "is a single Redis server but",
        "Top/Secret",
    );
    assert_quick_user_error(
        run(&single.url(), &[a.url(1)]),
        "is a single Redis server but",
        "Top/Secret",
    );
    assert_quick_user_error(
        run(&single.url(), &[other.url()]),
        "the first is not in cluster mode",
        "Top/Secret",
    );
    assert_quick_user_error(
        run(&a.url(0), &[a.url(2), b.url(1)]),
        "belong to two different Redis Clusters",
        "Top%2FSecret",
    );
}

/// The `stall_timeout` and limits of the runs that lose a master.
const LOST_MASTER_EXTRA: &str =
    "  batch_size: 5\n  requests_per_minute: 6000\n  rpm_counts: requests\n  stall_timeout: 60\n";

/// A run on a cluster of 3 masters with a replica each, beside a worker, whose queue's master
/// is lost by `lose` (killed, frozen) as soon as the run has queued its tasks.
struct LostMaster {
    cluster: RedisCluster,
    victim: usize,
    server: mock_gemini::BlockingMockServer,
    coordinator: tempfile::TempDir,
    out: std::process::Output,
    /// The run's output and the worker's log.
    all: String,
}

fn lose_the_queues_master(seed: u64, lose: fn(&mut RedisServer), within: Duration) -> LostMaster {
    let mut cluster = RedisCluster::start(3, 1, None);
    let server = start_blocking(common::mock_config(seed, |m| {
        m.latency = Duration::from_millis(300);
    }))
    .unwrap();
    let (_worker_dir, worker) =
        start_worker(&server.base_url(), &cluster.url(1), LOST_MASTER_EXTRA);
    let coordinator = common::gemini_dir(&server.base_url(), 24, 14, 6, LOST_MASTER_EXTRA);
    let run = spawn(coordinator.path(), &["--redis", &cluster.url(0)]);
    let victim = cluster.holder_of_the_queue();
    lose(&mut cluster.nodes[victim]);
    let out = common::output_within(run, within);
    let log = stop_worker(worker);
    let all = format!("{}\nworker: {log}", text(&out));
    LostMaster {
        cluster,
        victim,
        server,
        coordinator,
        out,
        all,
    }
}

/// The master holding a run's queue is killed (SIGKILL) as soon as the run has queued its
/// tasks; its replica takes over after the node timeout (2 s). The run and its worker follow
/// the new master, queue again what the failover lost, and finish with the puzzles of a run
/// alone; only texts in flight can be paid twice.
#[test]
fn a_master_killed_mid_run_is_replaced_and_the_run_makes_the_puzzles_of_a_run_alone() {
    let lost = lose_the_queues_master(26, RedisServer::kill, Duration::from_secs(120));
    let all = &lost.all;
    assert_eq!(lost.out.status.code(), Some(0), "{all}");
    assert!(all.contains("waiting for it (a failover?)"), "{all}");
    let masters = lost.cluster.masters();
    assert_eq!(masters.len(), 3, "a replica took the dead master's place");
    assert!(!masters.contains(&lost.victim));
    let s = lost.server.stats();
    // In flight at the kill: at most 6 requests of 5 texts in each of the two processes.
    assert!(s.duplicate_texts <= 60, "{s:?}");
    let base_url = lost.server.base_url();
    assert_same_as_a_run_alone(lost.coordinator.path(), &base_url, 24, 6, LOST_MASTER_EXTRA);
}

/// The master holding a run's queue stops answering (SIGSTOP: no connection is refused or
/// closed, every command to it times out) as soon as the run has queued its tasks; its replica
/// takes over after the node timeout (2 s). Connections that only time out do not learn the
/// new map by themselves: after 10 s of timeouts they are made anew from every node the
/// cluster had, and the run finishes with the puzzles of a run alone.
#[test]
fn a_master_that_stops_answering_is_replaced_and_the_run_makes_the_puzzles_of_a_run_alone() {
    let lost = lose_the_queues_master(28, |node| node.pause(), Duration::from_secs(150));
    let all = &lost.all;
    assert_eq!(lost.out.status.code(), Some(0), "{all}");
    assert!(all.contains("connected anew from its nodes"), "{all}");
    let base_url = lost.server.base_url();
    assert_same_as_a_run_alone(lost.coordinator.path(), &base_url, 24, 6, LOST_MASTER_EXTRA);
}

/// A master with no replica dies: its slots have no master, the cluster says CLUSTERDOWN. The
/// run waits for it with a log line (not one per request) for the stall timeout, then goes on
/// without the queue, and ends with exit 3 when the shared limiter has let no request through
/// for another stall timeout, its finished work kept.
#[test]
fn a_cluster_that_cannot_serve_a_slot_is_waited_for_until_the_stall_timeout() {
    let mut cluster = RedisCluster::start(3, 0, None);
    let server = start_blocking(common::mock_config(27, |m| {
        m.latency = Duration::from_millis(200);
    }))
    .unwrap();
    let extra = "  batch_size: 5\n  requests_per_minute: 6000\n  rpm_counts: requests\n  stall_timeout: 4\n";
    let coordinator = common::gemini_dir(&server.base_url(), 24, 14, 6, extra);
    let run = spawn(coordinator.path(), &["--redis", &cluster.url(0)]);
    let victim = cluster.holder_of_the_queue();
    let killed = Instant::now();
    cluster.nodes[victim].kill();
    let out = common::output_within(run, Duration::from_secs(60));
    let waited = killed.elapsed();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(
        all.contains("waiting for it (a failover?) for up to 4 s"),
        "{all}"
    );
    let waits = all.matches("waiting for it").count();
    assert!(
        waits <= 2 * (waited.as_secs() as usize / 5 + 2),
        "{waits} lines: {all}"
    );
    // The cluster's patience (4 s), then the service's stall timeout (4 s), and the ending.
    assert!(waited < Duration::from_secs(20), "{waited:?}: {all}");
}
