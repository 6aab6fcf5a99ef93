//! The simulated cluster's ground truth: nodes, pods and containers with known CPU rates and
//! working sets, cumulative counters that follow those rates exactly, restarts, counter resets
//! and pod churn. Pure: every instant is an argument (milliseconds since the epoch).
//!
//! A kubelet refreshes its stats every `refresh` period; samples carry the refresh instant
//! (minus a small per-series offset, as real kubelets stamp series a few ms apart), so two reads
//! within one period return identical timestamps, as on a real node.

use serde::Serialize;

/// A fault a simulated kubelet can be switched into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// Serve normally.
    #[default]
    None,
    /// Answer 500.
    Error500,
    /// Answer 200 with text that is not the exposition format.
    Garbage,
    /// Answer 200 with the body cut in the middle of a line.
    Truncated,
    /// Answer after a long delay.
    Slow,
    /// Answer with only `resource_scrape_error 1`, as a kubelet that cannot gather stats.
    ScrapeError,
}

impl Fault {
    /// Parses the control API's names.
    pub fn parse(s: &str) -> Option<Fault> {
        Some(match s {
            "none" => Fault::None,
            "500" | "error" => Fault::Error500,
            "garbage" => Fault::Garbage,
            "truncated" => Fault::Truncated,
            "slow" => Fault::Slow,
            "scrape-error" => Fault::ScrapeError,
            _ => return None,
        })
    }
}

/// One container.
#[derive(Clone, Debug, Serialize)]
pub struct SimContainer {
    /// Container name.
    pub name: String,
    /// True CPU usage, nanocores.
    pub cpu_nanocores: u64,
    /// True working set, bytes.
    pub memory_bytes: u64,
    /// Start time, ms.
    pub start_ms: i64,
    /// Cumulative CPU (ns) at `base_ms`.
    #[serde(skip)]
    pub cum_base_ns: u128,
    /// When `cum_base_ns` was taken.
    #[serde(skip)]
    pub base_ms: i64,
    /// How many ms before the refresh instant this series is stamped.
    #[serde(skip)]
    pub offset_ms: i64,
}

impl SimContainer {
    /// Cumulative CPU nanoseconds at `ms` (before `base_ms` too: the counter ran at the same
    /// rate before it was last rebased, never below zero).
    pub fn cum_at(&self, ms: i64) -> u128 {
        counter_at(self.cum_base_ns, self.base_ms, self.cpu_nanocores, ms)
    }

    fn rebase(&mut self, now_ms: i64) {
        self.cum_base_ns = self.cum_at(now_ms);
        self.base_ms = now_ms;
    }
}

/// A counter that was `base` at `base_ms` and grows by `rate` nanoseconds per second.
fn counter_at(base: u128, base_ms: i64, rate: u64, ms: i64) -> u128 {
    let delta = i128::from(rate) * i128::from(ms - base_ms) / 1000;
    (base as i128 + delta).max(0) as u128
}

/// One pod.
#[derive(Clone, Debug, Serialize)]
pub struct SimPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (agrees with the API object when the control-plane tests create one).
    pub uid: String,
    /// Containers.
    pub containers: Vec<SimContainer>,
}

/// One node and its kubelet.
#[derive(Clone, Debug, Serialize)]
pub struct SimNode {
    /// Node name.
    pub name: String,
    /// Pods bound to it.
    pub pods: Vec<SimPod>,
    /// Current fault.
    pub fault: Fault,
    /// Node CPU beyond its pods (system daemons), nanocores.
    pub overhead_cpu_nanocores: u64,
    /// Node working set beyond its pods, bytes.
    pub overhead_memory_bytes: u64,
    #[serde(skip)]
    node_cum_base_ns: u128,
    #[serde(skip)]
    node_base_ms: i64,
    #[serde(skip)]
    node_rate: u64,
}

impl SimNode {
    /// True node CPU usage: pods plus overhead.
    pub fn cpu_nanocores(&self) -> u64 {
        self.overhead_cpu_nanocores
            + self
                .pods
                .iter()
                .flat_map(|p| &p.containers)
                .map(|c| c.cpu_nanocores)
                .sum::<u64>()
    }

    /// True node working set.
    pub fn memory_bytes(&self) -> u64 {
        self.overhead_memory_bytes
            + self
                .pods
                .iter()
                .flat_map(|p| &p.containers)
                .map(|c| c.memory_bytes)
                .sum::<u64>()
    }

    /// Cumulative node CPU at `ms`.
    pub fn node_cum_at(&self, ms: i64) -> u128 {
        counter_at(self.node_cum_base_ns, self.node_base_ms, self.node_rate, ms)
    }

    /// Call after any change of container rates or pods: the node counter keeps counting at the
    /// new total rate from `now_ms`.
    fn rebase_node(&mut self, now_ms: i64) {
        self.node_cum_base_ns = self.node_cum_at(now_ms);
        self.node_base_ms = now_ms;
        self.node_rate = self.cpu_nanocores();
    }
}

/// How the fleet is generated.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Pods per node.
    pub pods_per_node: usize,
    /// Node names are this prefix plus an index.
    pub node_prefix: String,
    /// Seed of the deterministic generator.
    pub seed: u64,
    /// Kubelet stats refresh period, ms.
    pub refresh_ms: i64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            pods_per_node: 10,
            node_prefix: "sim-node-".to_owned(),
            seed: 1,
            refresh_ms: 1000,
        }
    }
}

/// A small deterministic generator (xorshift64*), so a seed reproduces a fleet exactly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    fn word(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..len)
            .map(|_| CHARS[self.range(0, CHARS.len() as u64) as usize] as char)
            .collect()
    }
}

const NAMESPACES: [&str; 4] = ["default", "kube-system", "shop", "monitoring"];
const APPS: [(&str, &[&str]); 5] = [
    ("web", &["web", "istio-proxy"]),
    ("api", &["api"]),
    ("worker", &["worker", "log-shipper", "metrics-exporter"]),
    ("cache", &["redis"]),
    ("db", &["postgres", "pgbouncer"]),
];

/// The simulated cluster.
#[derive(Clone, Debug, Serialize)]
pub struct Fleet {
    /// Nodes in name order.
    pub nodes: Vec<SimNode>,
    /// Stats refresh period, ms.
    pub refresh_ms: i64,
    #[serde(skip)]
    rng: Rng,
}

/// Names a container for the control API.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// Only this node.
    pub node: Option<String>,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this pod, or pods starting with this prefix when it ends with `*`.
    pub pod: Option<String>,
    /// Only this container.
    pub container: Option<String>,
}

impl Target {
    fn matches_pod(&self, node_name: &str, pod: &SimPod) -> bool {
        self.node.as_ref().is_none_or(|n| n == node_name)
            && self.namespace.as_ref().is_none_or(|n| *n == pod.namespace)
            && self.pod.as_ref().is_none_or(|p| match p.strip_suffix('*') {
                Some(prefix) => pod.name.starts_with(prefix),
                None => *p == pod.name,
            })
    }
}

impl Fleet {
    /// Generates `config.nodes` nodes with `config.pods_per_node` pods each; every container
    /// started `boot_ms - 1h`, so none is fresh.
    pub fn generate(config: &FleetConfig, now_ms: i64) -> Fleet {
        let mut fleet = Fleet {
            nodes: Vec::with_capacity(config.nodes),
            refresh_ms: config.refresh_ms.max(1),
            rng: Rng::new(config.seed),
        };
        let width = config.nodes.to_string().len().max(1);
        for i in 0..config.nodes {
            let mut node = SimNode {
                name: format!("{}{:0width$}", config.node_prefix, i),
                pods: Vec::new(),
                fault: Fault::None,
                overhead_cpu_nanocores: fleet.rng.range(50_000_000, 250_000_000),
                overhead_memory_bytes: fleet.rng.range(256, 1024) << 20,
                node_cum_base_ns: u128::from(fleet.rng.range(1_000, 100_000)) * 1_000_000_000,
                node_base_ms: now_ms,
                node_rate: 0,
            };
            for _ in 0..config.pods_per_node {
                let pod = fleet.random_pod(now_ms - 3_600_000);
                node.pods.push(pod);
            }
            node.rebase_node(now_ms);
            fleet.nodes.push(node);
        }
        fleet
    }

    fn random_pod(&mut self, start_ms: i64) -> SimPod {
        let ns = NAMESPACES[self.rng.range(0, NAMESPACES.len() as u64) as usize];
        let (app, containers) = APPS[self.rng.range(0, APPS.len() as u64) as usize];
        let name = format!("{app}-{}-{}", self.rng.word(9), self.rng.word(5));
        let uid = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            self.rng.next_u64() as u32,
            self.rng.next_u64() as u16,
            self.rng.next_u64() % 0x1000,
            self.rng.next_u64() % 0x1000,
            self.rng.next_u64() % 0x1_0000_0000_0000
        );
        let containers = containers
            .iter()
            .map(|c| self.container(c, start_ms))
            .collect();
        SimPod {
            namespace: ns.to_owned(),
            name,
            uid,
            containers,
        }
    }

    fn container(&mut self, name: &str, start_ms: i64) -> SimContainer {
        SimContainer {
            name: name.to_owned(),
            cpu_nanocores: self.rng.range(1_000_000, 800_000_000),
            memory_bytes: self.rng.range(2_000, 200_000) * 4096,
            start_ms,
            cum_base_ns: u128::from(self.rng.range(1, 5_000)) * 1_000_000_000,
            base_ms: start_ms + 3_600_000,
            offset_ms: self.rng.range(0, 25) as i64,
        }
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&SimNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Sets a fault on one node (or every node).
    pub fn set_fault(&mut self, node: Option<&str>, fault: Fault) -> usize {
        let mut n = 0;
        for sim in &mut self.nodes {
            if node.is_none_or(|name| name == sim.name) {
                sim.fault = fault;
                n += 1;
            }
        }
        n
    }

    fn for_each_container(
        &mut self,
        target: &Target,
        now_ms: i64,
        mut f: impl FnMut(&mut SimContainer),
    ) -> usize {
        let now_ms = self.sample_instant(now_ms);
        let mut n = 0;
        for node in &mut self.nodes {
            let mut touched = false;
            for pod in &mut node.pods {
                if !target.matches_pod(&node.name, pod) {
                    continue;
                }
                for c in &mut pod.containers {
                    if target.container.as_ref().is_none_or(|name| *name == c.name) {
                        f(c);
                        n += 1;
                        touched = true;
                    }
                }
            }
            if touched {
                node.rebase_node(now_ms);
            }
        }
        n
    }

    /// Changes true usage from the current refresh instant on; returns how many containers
    /// changed.
    pub fn set_usage(
        &mut self,
        target: &Target,
        cpu_nanocores: Option<u64>,
        memory_bytes: Option<u64>,
        now_ms: i64,
    ) -> usize {
        let at = self.sample_instant(now_ms);
        self.for_each_container(target, now_ms, |c| {
            c.rebase(at);
            if let Some(cpu) = cpu_nanocores {
                c.cpu_nanocores = cpu;
            }
            if let Some(mem) = memory_bytes {
                c.memory_bytes = mem;
            }
        })
    }

    /// Restarts containers: a quick restart, so the new container is already running at the
    /// current stats refresh instant, with a new start time and its counter from zero.
    pub fn restart(&mut self, target: &Target, now_ms: i64) -> usize {
        let at = self.sample_instant(now_ms);
        self.for_each_container(target, now_ms, |c| {
            c.start_ms = at;
            c.cum_base_ns = 0;
            c.base_ms = at;
        })
    }

    /// Resets containers' counters without a new start time (a runtime quirk), from the
    /// current stats refresh: the counter is zero at the timestamp this refresh stamps the
    /// series with (`offset_ms` before the refresh instant) and grows at the true rate from
    /// there, so every window after the reset averages exactly the true rate. (Zero at the
    /// refresh instant itself would leave the counter flat for `offset_ms` after the stamped
    /// sample, and the first window after the reset would truly average less than the rate.)
    pub fn reset_counter(&mut self, target: &Target, now_ms: i64) -> usize {
        let at = self.sample_instant(now_ms);
        self.for_each_container(target, now_ms, |c| {
            c.cum_base_ns = 0;
            c.base_ms = (at - c.offset_ms).max(c.start_ms);
        })
    }

    /// Adds a pod to a node, its containers starting at `now_ms`. Returns false when the node
    /// is unknown or the pod exists.
    pub fn add_pod(
        &mut self,
        node: &str,
        namespace: &str,
        name: &str,
        uid: &str,
        containers: &[(String, u64, u64)],
        now_ms: i64,
    ) -> bool {
        if self
            .nodes
            .iter()
            .flat_map(|n| &n.pods)
            .any(|p| p.namespace == namespace && p.name == name)
        {
            return false;
        }
        let offset = self.rng.range(0, 25) as i64;
        let Some(sim) = self.nodes.iter_mut().find(|n| n.name == node) else {
            return false;
        };
        sim.pods.push(SimPod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            containers: containers
                .iter()
                .map(|(c, cpu, mem)| SimContainer {
                    name: c.clone(),
                    cpu_nanocores: *cpu,
                    memory_bytes: *mem,
                    start_ms: now_ms,
                    cum_base_ns: 0,
                    base_ms: now_ms,
                    offset_ms: offset,
                })
                .collect(),
        });
        sim.rebase_node(now_ms);
        true
    }

    /// Removes pods matching `target`; returns how many.
    pub fn remove_pods(&mut self, target: &Target, now_ms: i64) -> usize {
        let mut n = 0;
        for node in &mut self.nodes {
            let before = node.pods.len();
            let name = node.name.clone();
            node.pods.retain(|p| !target.matches_pod(&name, p));
            if node.pods.len() != before {
                n += before - node.pods.len();
                node.rebase_node(now_ms);
            }
        }
        n
    }

    /// Replaces one random pod of one random node with a new one (pod churn).
    pub fn churn(&mut self, now_ms: i64) -> Option<(String, String)> {
        if self.nodes.is_empty() {
            return None;
        }
        let i = self.rng.range(0, self.nodes.len() as u64) as usize;
        if self.nodes[i].pods.is_empty() {
            return None;
        }
        let j = self.rng.range(0, self.nodes[i].pods.len() as u64) as usize;
        let pod = self.random_pod(now_ms);
        let old = std::mem::replace(&mut self.nodes[i].pods[j], pod);
        self.nodes[i].rebase_node(now_ms);
        Some((old.namespace, old.name))
    }

    /// The refresh instant a read at `now_ms` sees.
    pub fn sample_instant(&self, now_ms: i64) -> i64 {
        now_ms - now_ms.rem_euclid(self.refresh_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Across a counter reset and a restart, every window between two stamped samples after
    /// the change averages exactly the true rate (what the pipeline tests compare against).
    #[test]
    fn windows_after_a_reset_or_restart_average_the_true_rate() {
        let refresh = 10_000;
        let t0 = 1_764_000_000_000;
        let mut fleet = Fleet::generate(
            &FleetConfig {
                nodes: 1,
                pods_per_node: 6,
                refresh_ms: refresh,
                ..FleetConfig::default()
            },
            t0,
        );
        let pods: Vec<(String, String)> = fleet.nodes[0]
            .pods
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        let target = |(ns, pod): &(String, String)| Target {
            namespace: Some(ns.clone()),
            pod: Some(pod.clone()),
            ..Target::default()
        };
        let now = t0 + 5 * refresh + 1234;
        assert!(fleet.reset_counter(&target(&pods[0]), now) > 0);
        assert!(fleet.restart(&target(&pods[1]), now) > 0);
        let at = fleet.sample_instant(now);
        for pod in &fleet.nodes[0].pods[..2] {
            for c in &pod.containers {
                let stamp = |at: i64| (at - c.offset_ms).max(c.start_ms);
                for k in 0..3 {
                    let (a, b) = (stamp(at + k * refresh), stamp(at + (k + 1) * refresh));
                    let used = c.cum_at(b) - c.cum_at(a);
                    let rate = used * 1_000 / (b - a) as u128;
                    // the counter is whole nanoseconds: one nanocore of rounding
                    assert!(
                        rate.abs_diff(u128::from(c.cpu_nanocores)) <= 1,
                        "rate {rate}n, true {}n: {}/{} window {k} after the change: {a}..{b}",
                        c.cpu_nanocores,
                        pod.name,
                        c.name
                    );
                }
            }
        }
    }
}
