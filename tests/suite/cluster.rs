//! Redis Cluster (issue 24): a run, its workers and `status` on a cluster of their own (three
//! masters and three replicas on free loopback ports, made with `redis-cli --cluster create`),
//! and the seed-node mistakes that must stop a run at once.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mock_gemini::{MockConfig, QuotaUnit, start_blocking};

use crate::common::{self, RedisServer, free_port};
use crate::redis::{
    assert_quick_user_error, assert_same_as_a_run_alone, start_worker, status_json, stop_worker,
    text,
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

    /// Waits until every node says `cluster_state:ok` and knows all `count` nodes.
    fn wait_until_ok(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = (0..self.nodes.len()).all(|i| {
                let mut c = self.connection(i);
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap();
                let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c).unwrap();
                info.contains("cluster_state:ok") && nodes.lines().count() == count
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

    /// The indices of the nodes that are masters now.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                let role: redis::Value = redis::cmd("ROLE").query(&mut self.connection(i)).unwrap();
                matches!(&role, redis::Value::Array(a)
                    if matches!(a.first(), Some(redis::Value::BulkString(b)) if b == b"master"))
            })
            .collect()
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
    let server = start_blocking(MockConfig {
        dimension: 768,
        latency: Duration::from_millis(100),
        quota_per_minute: Some(120),
        quota_unit: QuotaUnit::Texts,
        quota_window: Duration::from_secs(1),
        ..MockConfig::default()
    })
    .unwrap();
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
