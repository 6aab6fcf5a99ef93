use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubepulse_model::{ContainerName, Epoch, NodeView, PodKey, Sample, Timestamp, Usage, Window};

use super::*;
use crate::meta::{Kind, MetaStore, NodeMeta, PodMeta};
use crate::store::{
    ClusterStore, PendingContainer, ScrapeStatus, StoreConfig, StreamId, StreamInfo, Update,
};

const SEC: Duration = Duration::from_secs(1);

/// A store and (optionally) metadata, driven by a fake monotonic clock starting at `t0`.
struct World {
    t0: Instant,
    store: ClusterStore,
    meta: Option<MetaStore>,
    next_stream: u64,
    streams: BTreeMap<String, StreamId>,
}

impl World {
    fn standalone() -> Self {
        Self {
            t0: Instant::now(),
            store: ClusterStore::new(StoreConfig::default()),
            meta: None,
            next_stream: 0,
            streams: BTreeMap::new(),
        }
    }

    /// With synced metadata listing `nodes` (labels `zone=<node>`).
    fn kubernetes(nodes: &[&str]) -> Self {
        let mut meta = MetaStore::new();
        for kind in [Kind::Pods, Kind::Nodes] {
            meta.begin_relist(kind);
        }
        for n in nodes {
            let labels = BTreeMap::from([("zone".to_owned(), (*n).to_owned())]);
            meta.apply_node(
                node(n),
                NodeMeta {
                    labels: Arc::new(labels),
                },
            );
        }
        for kind in [Kind::Pods, Kind::Nodes] {
            meta.end_relist(kind);
        }
        Self {
            meta: Some(meta),
            ..Self::standalone()
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + SEC * secs as u32
    }

    fn pod_meta(&mut self, pod: &str, bound: Option<&str>, running: bool) {
        self.meta.as_mut().unwrap().apply_pod(
            key(pod),
            PodMeta {
                labels: Arc::default(),
                node: bound.map(node),
                running,
                uid: 0,
            },
        );
    }

    fn open(&mut self, n: &str, at: u64) {
        self.next_stream += 1;
        let id = StreamId(self.next_stream);
        self.streams.insert(n.to_owned(), id);
        let info = StreamInfo {
            epoch: Epoch(1),
            poll_interval: SEC,
            agent_version: "0.1.0".into(),
        };
        self.store.open_stream(node(n), id, info, self.at(at));
    }

    fn update(&mut self, n: &str, update: Update, at: u64) {
        let id = self.streams[n];
        let now = self.at(at);
        self.store.apply(&node(n), id, update, now).unwrap();
    }

    /// Opens a stream for `n` at `at` and sends a snapshot with `pods` and a node sample.
    fn report(&mut self, n: &str, pods: &[&str], at: u64) {
        self.open(n, at);
        self.update(n, Update::Snapshot(view(pods).into()), at);
        self.update(n, Update::Status(ok_status()), at);
    }

    fn close(&mut self, n: &str, at: u64) {
        let id = self.streams[n];
        let at = self.at(at);
        self.store.close_stream(&node(n), id, at);
    }

    fn pod(&mut self, pod: &str, now: u64) -> PodExplanation {
        self.pod_with(pod, now, None, None)
    }

    fn pod_with(
        &mut self,
        pod: &str,
        now: u64,
        api: Option<&ApiPod>,
        selector: Option<&LabelSelector>,
    ) -> PodExplanation {
        let view = self.store.publish();
        let meta = self.meta.as_mut().map(|m| m.publish());
        let scope = Scope {
            view: &view,
            meta: meta.as_ref(),
            node_selector: selector,
            now: self.at(now),
        };
        explain_pod(&scope, "ns", pod, api)
    }

    fn node(&mut self, n: &str, now: u64, selector: Option<&LabelSelector>) -> NodeExplanation {
        let view = self.store.publish();
        let meta = self.meta.as_mut().map(|m| m.publish());
        let scope = Scope {
            view: &view,
            meta: meta.as_ref(),
            node_selector: selector,
            now: self.at(now),
        };
        explain_node(&scope, n)
    }
}

fn node(n: &str) -> NodeName {
    NodeName::new(n).unwrap()
}

fn key(pod: &str) -> PodKey {
    PodKey::new("ns", pod).unwrap()
}

fn sample(ts_ms: i64) -> Sample {
    Sample {
        usage: Usage {
            cpu_nanocores: 5_000_000,
            memory_bytes: 1 << 20,
        },
        timestamp: Timestamp::from_millis(ts_ms),
        window: Window(15_000_000_000),
    }
}

fn view(pods: &[&str]) -> NodeView {
    let mut v = NodeView {
        node: Some(sample(1_000)),
        ..NodeView::default()
    };
    for p in pods {
        v.pods
            .entry(key(p))
            .or_default()
            .containers
            .insert(ContainerName::new("app").unwrap(), sample(1_000));
    }
    v
}

fn ok_status() -> ScrapeStatus {
    ScrapeStatus {
        ok: true,
        ..ScrapeStatus::default()
    }
}

fn failed(error: &str) -> ScrapeStatus {
    ScrapeStatus {
        ok: false,
        error: error.into(),
        ..ScrapeStatus::default()
    }
}

fn pending(pod: &str, container: &str, reason: &str) -> ScrapeStatus {
    ScrapeStatus {
        pending: vec![PendingContainer {
            pod: key(pod),
            container: ContainerName::new(container).unwrap(),
            reason: reason.into(),
        }],
        ..ok_status()
    }
}

fn codes(reasons: &[Reason]) -> Vec<&'static str> {
    reasons.iter().map(Reason::code).collect()
}

/// `has_metrics` and the reason codes, in order.
fn check(e: &PodExplanation, has_metrics: bool, expected: &[&str]) {
    assert_eq!(
        (e.has_metrics, codes(&e.reasons)),
        (has_metrics, expected.to_vec()),
        "{e:#?}"
    );
}

#[test]
fn a_served_pod_has_metrics_and_no_reasons() {
    let mut w = World::kubernetes(&["n1"]);
    w.pod_meta("web", Some("n1"), true);
    w.report("n1", &["web"], 0);
    let e = w.pod("web", 3);
    check(&e, true, &[]);
    assert_eq!(e.node, Some(node("n1")));
    assert_eq!(
        e.sample,
        Some((Timestamp::from_millis(1_000), Window(15_000_000_000)))
    );
    let s = e.stream.unwrap();
    assert!(s.connected && s.has_data && s.kubelet_ok);
    assert_eq!((s.fresh_age, s.expires_in), (3 * SEC, Some(27 * SEC)));
    assert_eq!((s.pods, s.held_back, s.poll_interval), (1, 0, SEC));
}

#[test]
fn standalone_serves_any_reported_pod_and_knows_nothing_else() {
    let mut w = World::standalone();
    w.report("n1", &["web"], 0);
    check(&w.pod("web", 1), true, &[]);
    let e = w.pod("ghost", 1);
    check(&e, false, &["NotReportedAnywhere"]);
    assert_eq!(e.node, None);
}

#[test]
fn a_pod_the_watch_does_not_list_is_unknown_until_the_api_says_more() {
    let mut w = World::kubernetes(&["n1"]);
    w.report("n1", &[], 0);
    check(&w.pod("web", 1), false, &["PodUnknown"]);
    assert!(w.pod("web", 1).reasons[0].message().contains("not Running"));
    check(
        &w.pod_with("web", 1, Some(&ApiPod::NotFound), None),
        false,
        &["PodNotFound"],
    );
    let pending = ApiPod::Found {
        phase: "Pending".into(),
        node: None,
    };
    let e = w.pod_with("web", 1, Some(&pending), None);
    check(&e, false, &["PodNotRunning", "PodNotScheduled"]);
    assert_eq!(
        e.reasons[0].message(),
        "the pod is Pending, not Running; metrics exist only for Running pods"
    );
    // scheduled but still Pending: the node's state is shown too
    let scheduled = ApiPod::Found {
        phase: "Pending".into(),
        node: Some(node("n1")),
    };
    let e = w.pod_with("web", 1, Some(&scheduled), None);
    check(&e, false, &["PodNotRunning", "NotReportedByAgent"]);
    assert_eq!(e.node, Some(node("n1")));
    let running = ApiPod::Found {
        phase: "Running".into(),
        node: Some(node("n1")),
    };
    check(
        &w.pod_with("web", 1, Some(&running), None),
        false,
        &["WatchBehind", "NotReportedByAgent"],
    );
}

#[test]
fn a_known_pod_that_is_not_running() {
    let mut w = World::kubernetes(&["n1"]);
    w.pod_meta("done", Some("n1"), false);
    w.report("n1", &["done"], 0);
    check(&w.pod("done", 1), false, &["PodNotRunning"]);
}

#[test]
fn unsynced_metadata_is_said_first() {
    let mut w = World::kubernetes(&[]);
    w.meta = Some(MetaStore::new());
    check(
        &w.pod("web", 0),
        false,
        &["MetadataNotSynced", "PodUnknown"],
    );
}

#[test]
fn a_bound_node_without_any_agent_stream() {
    let mut w = World::kubernetes(&["n1"]);
    w.pod_meta("web", Some("n1"), true);
    let e = w.pod("web", 0);
    check(&e, false, &["NoAgentStream"]);
    assert!(e.reasons[0].message().contains("node n1"));
    assert_eq!(e.stream, None);
}

#[test]
fn a_disconnected_agent_is_served_until_its_ttl_then_expires() {
    let mut w = World::kubernetes(&["n1"]);
    w.pod_meta("web", Some("n1"), true);
    w.report("n1", &["web"], 0);
    w.update("n1", Update::Status(ok_status()), 4);
    w.close("n1", 4);
    let e = w.pod("web", 10);
    check(&e, true, &["AgentDisconnected"]);
    assert_eq!(
        e.reasons[0],
        Reason::AgentDisconnected {
            node: node("n1"),
            quiet_for: 6 * SEC,
            serving_last_values: true,
        }
    );
    assert_eq!(e.stream.as_ref().unwrap().expires_in, Some(24 * SEC));

    // past the 30 s TTL
    assert_eq!(w.store.evict_stale(w.at(40)), vec![node("n1")]);
    let e = w.pod("web", 45);
    check(&e, false, &["AgentDisconnected", "DataExpired"]);
    assert_eq!(
        e.reasons[1],
        Reason::DataExpired {
            node: node("n1"),
            ago: 5 * SEC,
            ttl: 30 * SEC,
        }
    );
    assert_eq!(
        e.reasons[1].message(),
        "node n1's data expired 5s ago: no successful kubelet read within its TTL of 30s"
    );
    assert_eq!(e.stream.unwrap().expired_ago, Some(5 * SEC));
}

#[test]
fn a_failing_kubelet_read_is_reported_with_its_error() {
    let mut w = World::kubernetes(&["n1"]);
    w.pod_meta("web", Some("n1"), true);
    w.report("n1", &["web"], 0);
    w.update("n1", Update::Status(failed("kubelet answered 500")), 2);
    // last good values still served
    let e = w.pod("web", 3);
    check(&e, true, &["KubeletReadFailed"]);
    assert!(e.reasons[0].message().contains("kubelet answered 500"));
    assert!(e.reasons[0].message().contains("last good values"));
    let s = e.stream.unwrap();
    assert_eq!(
        (s.kubelet_ok, s.kubelet_error.as_str()),
        (false, "kubelet answered 500")
    );
    assert_eq!(
        s.fresh_age,
        3 * SEC,
        "a failed read does not refresh the data"
    );

    // a new pod on a failing node
    w.pod_meta("new", Some("n1"), true);
    let e = w.pod("new", 3);
    check(&e, false, &["KubeletReadFailed"]);
}

#[test]
fn a_failing_kubelet_on_a_fresh_agent() {
    let mut w = World::kubernetes(&["n1"]);
    w.pod_meta("web", Some("n1"), true);
    w.open("n1", 0);
    w.update("n1", Update::Status(failed("connection refused")), 0);
    check(
        &w.pod("web", 1),
        false,
        &["AwaitingSnapshot", "KubeletReadFailed"],
    );
}

#[test]
fn held_back_containers_give_the_agents_reason() {
    let mut w = World::kubernetes(&["n1"]);
    for pod in ["restarted", "young", "odd"] {
        w.pod_meta(pod, Some("n1"), true);
    }
    w.report("n1", &[], 0);
    let mut status = pending("restarted", "app", "restarted");
    status
        .pending
        .extend(pending("young", "app", "waiting_for_second_sample").pending);
    status
        .pending
        .extend(pending("odd", "side", "zero_memory").pending);
    w.update("n1", Update::Status(status), 1);

    let e = w.pod("restarted", 2);
    check(&e, false, &["ContainerRestarted"]);
    assert!(
        e.reasons[0]
            .message()
            .starts_with("container app restarted")
    );
    check(&w.pod("young", 2), false, &["WaitingForSecondSample"]);
    let e = w.pod("odd", 2);
    check(&e, false, &["ContainerHeldBack"]);
    assert!(e.reasons[0].message().contains("zero working set"));
    assert_eq!(e.stream.unwrap().held_back, 3);
}

#[test]
fn held_back_pods_are_found_without_metadata() {
    let mut w = World::standalone();
    w.report("n1", &[], 0);
    w.update("n1", Update::Status(pending("web", "app", "restarted")), 1);
    let e = w.pod("web", 2);
    check(&e, false, &["ContainerRestarted"]);
    assert_eq!(e.node, Some(node("n1")));
}

#[test]
fn a_pod_the_agent_does_not_mention() {
    let mut w = World::kubernetes(&["n1"]);
    w.pod_meta("web", Some("n1"), true);
    w.report("n1", &["other"], 0);
    check(&w.pod("web", 1), false, &["NotReportedByAgent"]);
    let mut status = ok_status();
    status.pending_dropped = 300;
    w.update("n1", Update::Status(status), 1);
    check(&w.pod("web", 1), false, &["PendingListTruncated"]);
}

#[test]
fn a_pod_reported_by_another_node_than_its_own() {
    let mut w = World::kubernetes(&["n1", "n2"]);
    w.pod_meta("web", Some("n2"), true);
    w.report("n1", &["web"], 0);
    w.report("n2", &[], 0);
    let e = w.pod("web", 1);
    check(&e, false, &["ReportedByOtherNode", "NotReportedByAgent"]);
    assert_eq!(e.node, Some(node("n2")));
}

#[test]
fn the_node_selector_hides_nodes_from_lists_only() {
    let mut w = World::kubernetes(&["n1", "n2"]);
    w.pod_meta("web", Some("n2"), true);
    w.report("n1", &[], 0);
    w.report("n2", &["web"], 0);
    let selector = LabelSelector::parse("zone=n1").unwrap();
    let e = w.node("n2", 1, Some(&selector));
    assert!(e.has_metrics && !e.listed);
    assert_eq!(codes(&e.reasons), ["NodeNotSelected"]);
    assert_eq!(
        e.reasons[0].message(),
        "node n2 does not match --node-selector=\"zone=n1\": node lists omit it"
    );
    let e = w.node("n1", 1, Some(&selector));
    assert!(e.has_metrics && e.listed && e.reasons.is_empty());
    // the pods of an unselected node are still served
    let e = w.pod_with("web", 1, None, Some(&selector));
    check(&e, true, &["NodeNotSelected"]);
}

#[test]
fn node_explanations() {
    let mut w = World::kubernetes(&["n1", "n2", "n3"]);
    w.report("n1", &[], 0);
    let e = w.node("n1", 2, None);
    assert!(e.has_metrics && e.listed && e.reasons.is_empty());
    assert_eq!(e.sample.unwrap().0, Timestamp::from_millis(1_000));

    // no stream
    let e = w.node("n2", 2, None);
    assert!(!e.has_metrics);
    assert_eq!(codes(&e.reasons), ["NoAgentStream"]);

    // connected, node usage held back
    w.open("n3", 0);
    w.update("n3", Update::Snapshot(NodeView::default().into()), 0);
    let mut status = ok_status();
    status.node_pending = "waiting_for_second_sample".into();
    w.update("n3", Update::Status(status), 0);
    let e = w.node("n3", 1, None);
    assert_eq!(codes(&e.reasons), ["NodeUsagePending"]);
    assert!(e.reasons[0].message().contains("waiting_for_second_sample"));

    // not a Node the API knows
    w.report("stray", &[], 0);
    let e = w.node("stray", 1, None);
    assert!(!e.has_metrics);
    assert_eq!(codes(&e.reasons), ["NodeUnknown"]);
}

#[test]
fn invalid_names() {
    let mut w = World::standalone();
    check(&w.pod("a/b", 0), false, &["InvalidName"]);
    assert_eq!(codes(&w.node("", 0, None).reasons), ["InvalidName"]);
}

#[test]
fn human_durations() {
    assert_eq!(human(Duration::from_micros(1_234_567)), "1.234s");
    assert_eq!(human(Duration::from_secs(125)), "2m5s");
    assert_eq!(human(Duration::ZERO), "0s");
}

#[test]
fn authorization_sees_the_explain_subresource() {
    use crate::authz::{Attributes, request_attributes};
    let attrs = request_attributes(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods/web/explain",
        None,
    );
    let Attributes::Resource {
        verb,
        resource,
        subresource,
        namespace,
        name,
        ..
    } = attrs
    else {
        panic!("not a resource request: {attrs:?}");
    };
    assert_eq!(
        (verb.as_str(), resource.as_str(), subresource.as_str()),
        ("get", "pods", "explain")
    );
    assert_eq!((namespace.as_str(), name.as_str()), ("ns", "web"));
    let attrs = request_attributes("GET", "/apis/metrics.k8s.io/v1/nodes/n1/explain", None);
    assert!(matches!(
        attrs,
        Attributes::Resource { ref resource, ref subresource, ref name, .. }
            if resource == "nodes" && subresource == "explain" && name == "n1"
    ));
}

#[test]
fn encoded_documents() {
    let mut w = World::kubernetes(&["n1"]);
    w.pod_meta("web", Some("n1"), true);
    w.report("n1", &[], 0);
    w.update("n1", Update::Status(pending("web", "app", "restarted")), 0);
    let now = Timestamp::from_millis(3_500);
    let doc: serde_json::Value =
        serde_json::from_slice(&crate::encode::explain::pod(&w.pod("web", 2), now).body).unwrap();
    assert_eq!(doc["kind"], "PodMetricsExplanation");
    assert_eq!(doc["apiVersion"], "kubepulse.io/v1alpha1");
    assert_eq!(doc["metadata"]["namespace"], "ns");
    assert_eq!(doc["metadata"]["creationTimestamp"], "1970-01-01T00:00:03Z");
    assert_eq!(doc["hasMetrics"], false);
    assert_eq!(doc["node"], "n1");
    let reason = &doc["reasons"][0];
    assert_eq!(reason["code"], "ContainerRestarted");
    assert_eq!(reason["container"], "app");
    assert_eq!(reason["agentReason"], "restarted");
    assert!(
        doc["summary"]
            .as_str()
            .unwrap()
            .starts_with("no metrics: container app restarted")
    );
    assert_eq!(doc["stream"]["freshAge"], "2s");
    assert_eq!(doc["stream"]["lastFresh"], "1970-01-01T00:00:01Z");
    assert_eq!(doc["stream"]["kubeletRead"]["ok"], true);
    assert!(doc.get("lastSample").is_none());

    w.update("n1", Update::Status(ok_status()), 0);
    let doc: serde_json::Value =
        serde_json::from_slice(&crate::encode::explain::node(&w.node("n1", 2, None), now).body)
            .unwrap();
    assert_eq!(doc["kind"], "NodeMetricsExplanation");
    assert_eq!(
        (doc["hasMetrics"].as_bool(), doc["listed"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(doc["summary"], "has metrics");
    assert_eq!(doc["lastSample"]["timestamp"], "1970-01-01T00:00:01Z");
    assert_eq!(doc["lastSample"]["window"], "15s");
    assert_eq!(doc["lastSample"]["age"], "2.5s");
    assert_eq!(doc["reasons"], serde_json::json!([]));
}
