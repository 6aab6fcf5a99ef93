//! One node's usage as the aggregator's store holds it: the same content as a [`NodeView`],
//! laid out so that the common update — new samples for the containers the node already
//! reports — writes one flat vector.
//!
//! A node's pods and containers (names, order) change rarely; their samples change every
//! kubelet read. So the names live in a layout ([`PodNames`]) behind an `Arc`, shared by every
//! version of the node's usage until a pod or container comes or goes, and the samples live in
//! one vector parallel to the layout's containers (16 bytes a sample: see `table/samples.rs`).
//! A delta that only updates samples copies that vector (one allocation) when a published view
//! still holds the previous version; a delta that changes the layout builds a new one.

use std::sync::Arc;

use samples::Samples;

use crate::{
    ApplyError, ContainerName, Delta, Namespace, NodeChange, NodeView, PodKey, PodView, Sample,
    Timestamp, Usage, Window,
};

mod samples;

/// A sample standing in where only the names matter ([`PodNames::after`]).
const PLACEHOLDER: Sample = Sample {
    usage: Usage {
        cpu_nanocores: 0,
        memory_bytes: 0,
    },
    timestamp: Timestamp(0),
    window: Window(0),
};

/// A delta that adds or removes pods or containers, decoded against the node's names
/// `before`, with the names it leads to (`after`, from [`PodNames::after`]); see
/// [`NodeUsage::reshape`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reshape {
    /// The names the delta was decoded against.
    pub before: PodNames,
    /// The delta.
    pub delta: Delta,
    /// The names after it.
    pub after: PodNames,
}

/// New samples for containers a node already reports, each by its slot in the node's
/// [`PodTable`] (see [`NodeUsage::write`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotSamples {
    /// The names the slots refer to.
    pub names: PodNames,
    /// The node's own usage.
    pub node: NodeChange,
    /// (slot, sample), in the order received.
    pub samples: Vec<(u32, Sample)>,
}

/// One node's usage. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// The node's own usage, once two usable kubelet samples exist.
    pub node: Option<Sample>,
    /// Pods with complete usage.
    pub pods: PodTable,
}

/// A node's pods, sorted by namespace and name, each with its containers sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodTable {
    layout: Arc<Layout>,
    /// One sample per container of `layout.containers`, same order.
    samples: Samples,
}

/// The names: which pods, which containers, in which order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Layout {
    /// Every pod.
    pods: Vec<PodKey>,
    /// For each pod, the end of its containers' range (the start is the previous pod's end).
    /// Apart from the keys, which would otherwise be padded to 24 bytes each.
    ends: Vec<u32>,
    /// Every pod's containers, pod after pod.
    containers: Vec<ContainerName>,
}

/// A node's pod and container names at one moment, without the samples: cheap to keep (it
/// shares them with the [`PodTable`] it came from).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodNames(Arc<Layout>);

impl PodNames {
    /// True when both are the very same names (a pod table keeps its names until a pod or a
    /// container comes or goes). False says nothing.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Number of pods.
    pub fn len(&self) -> usize {
        self.0.pods.len()
    }

    /// True without pods.
    pub fn is_empty(&self) -> bool {
        self.0.pods.is_empty()
    }

    /// Number of containers (of samples in the matching [`PodTable`]).
    pub fn container_count(&self) -> usize {
        self.0.containers.len()
    }

    /// The index of pod `key`, if it is there.
    pub fn pod_index(&self, key: &PodKey) -> Option<usize> {
        self.0.position(key).ok()
    }

    /// The pod at `index` (from [`PodNames::pod_index`] or [`PodNames::container`]).
    pub fn pod(&self, index: usize) -> Option<&PodKey> {
        self.0.pods.get(index)
    }

    /// The slot of `key`'s container `name`: where its sample is in the [`PodTable`].
    pub fn slot(&self, key: &PodKey, name: &ContainerName) -> Option<usize> {
        self.0.slot(key, name)
    }

    /// The pod index and name of the container in `slot`.
    pub fn container(&self, slot: usize) -> Option<(usize, &ContainerName)> {
        let name = self.0.containers.get(slot)?;
        let pod = self.0.ends.partition_point(|end| *end as usize <= slot);
        Some((pod, name))
    }

    /// The names a view would have after `delta`, with the error [`crate::apply`] gives a
    /// view with these names. It builds a view of them (with placeholder samples) on the way:
    /// meant for the rare delta that adds or removes a pod or container.
    pub fn after(&self, delta: &Delta) -> Result<PodNames, ApplyError> {
        let mut view = NodeUsage {
            node: None,
            pods: PodTable {
                layout: Arc::clone(&self.0),
                samples: {
                    let n = self.0.containers.len();
                    let mut samples = Samples::with_capacity(n);
                    (0..n).for_each(|_| samples.push(PLACEHOLDER));
                    samples
                },
            },
        }
        .to_view();
        crate::apply(&mut view, delta)?;
        Ok(NodeUsage::from(view).pods.names())
    }

    /// The namespaces the pods are in, sorted, each once.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        let pods = &self.0.pods;
        pods.iter()
            .enumerate()
            // pods are sorted by namespace: equal namespaces are adjacent
            .filter(|(i, k)| *i == 0 || pods[i - 1].namespace != k.namespace)
            .map(|(_, k)| &k.namespace)
    }
}

/// One pod's containers and their samples, sorted by container name.
#[derive(Clone, Copy, Debug)]
pub struct PodUsage<'a> {
    names: &'a [ContainerName],
    samples: &'a Samples,
    /// The slot of the first container.
    start: usize,
}

impl Layout {
    fn range(&self, pod: usize) -> std::ops::Range<usize> {
        let start = match pod {
            0 => 0,
            i => self.ends[i - 1] as usize,
        };
        start..self.ends[pod] as usize
    }

    fn position(&self, key: &PodKey) -> Result<usize, usize> {
        self.pods.binary_search(key)
    }

    /// Where the sample of `key`'s container `name` lives, if the layout has it.
    fn slot(&self, key: &PodKey, name: &ContainerName) -> Option<usize> {
        let range = self.range(self.position(key).ok()?);
        let start = range.start;
        self.containers[range]
            .binary_search(name)
            .ok()
            .map(|i| start + i)
    }
}

/// Where the next upsert most likely goes: deltas list their upserts in the layout's order
/// (pod, then container, both sorted), often all of them, with the very texts the layout
/// holds. Checking the slot after the last one written is then a pointer comparison, where a
/// binary search compares strings.
#[derive(Default)]
struct Cursor {
    /// The next slot.
    slot: usize,
    /// Its pod.
    pod: usize,
}

impl Cursor {
    /// The next slot if it holds `key`'s container `name` (the very same texts).
    fn next(&self, layout: &Layout, key: &PodKey, name: &ContainerName) -> Option<usize> {
        let pod = layout.pods.get(self.pod)?;
        let held = layout.containers.get(self.slot)?;
        (held.same(name) && pod.same(key)).then_some(self.slot)
    }

    /// Moves past `slot`.
    fn follow(&mut self, layout: &Layout, slot: usize) {
        self.slot = slot + 1;
        self.pod = layout
            .ends
            .partition_point(|end| *end as usize <= self.slot);
    }
}

impl PodTable {
    /// Number of pods.
    pub fn len(&self) -> usize {
        self.layout.pods.len()
    }

    /// True without pods.
    pub fn is_empty(&self) -> bool {
        self.layout.pods.is_empty()
    }

    /// Number of containers across all pods.
    pub fn container_count(&self) -> usize {
        self.samples.len()
    }

    /// The names alone.
    pub fn names(&self) -> PodNames {
        PodNames(Arc::clone(&self.layout))
    }

    fn pod(&self, i: usize) -> (&PodKey, PodUsage<'_>) {
        let range = self.layout.range(i);
        (
            &self.layout.pods[i],
            PodUsage {
                start: range.start,
                names: &self.layout.containers[range],
                samples: &self.samples,
            },
        )
    }

    /// The pod `key`.
    pub fn get(&self, key: &PodKey) -> Option<PodUsage<'_>> {
        self.layout.position(key).ok().map(|i| self.pod(i).1)
    }

    /// True when the node reports pod `key`.
    pub fn contains_key(&self, key: &PodKey) -> bool {
        self.layout.position(key).is_ok()
    }

    /// Every pod, sorted.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&PodKey, PodUsage<'_>)> + Clone {
        (0..self.len()).map(|i| self.pod(i))
    }

    /// The pods of `namespace` (every pod when `None`), sorted: a binary search, not a scan.
    pub fn in_namespace<'a>(
        &'a self,
        namespace: Option<&str>,
    ) -> impl ExactSizeIterator<Item = (&'a PodKey, PodUsage<'a>)> + Clone {
        let pods = &self.layout.pods;
        let range = match namespace {
            None => 0..pods.len(),
            Some(ns) => {
                let from = pods.partition_point(|k| k.namespace.as_str() < ns);
                let to = from + pods[from..].partition_point(|k| k.namespace.as_str() == ns);
                from..to
            }
        };
        range.map(|i| self.pod(i))
    }
}

impl<'a> PodUsage<'a> {
    /// Every container and its sample, sorted by name.
    pub fn containers(self) -> impl ExactSizeIterator<Item = (&'a ContainerName, Sample)> {
        let (samples, start) = (self.samples, self.start);
        (self.names.iter().enumerate()).map(move |(i, name)| (name, samples.get(start + i)))
    }

    /// The pod's timestamp and window: those of the container whose timestamp is earliest
    /// (as [`crate::PodView::timestamp_window`]).
    pub fn timestamp_window(self) -> Option<(Timestamp, Window)> {
        self.containers()
            .map(|(_, s)| s)
            .min_by_key(|s| s.timestamp)
            .map(|s| (s.timestamp, s.window))
    }
}

impl NodeUsage {
    /// Number of containers across all pods.
    pub fn container_count(&self) -> usize {
        self.pods.container_count()
    }

    /// The same content as a [`NodeView`].
    pub fn to_view(&self) -> NodeView {
        NodeView {
            node: self.node,
            pods: self
                .pods
                .iter()
                .map(|(key, pod)| {
                    let containers = pod.containers().map(|(c, s)| (c.clone(), s)).collect();
                    (key.clone(), PodView { containers })
                })
                .collect(),
        }
    }

    /// Applies `delta` exactly as [`crate::apply`] applies it to a [`NodeView`],
    /// with the same errors. On error the usage may be partly changed; the caller discards it.
    ///
    /// A delta that only brings new samples for held containers writes them in place; one
    /// that adds or removes a pod or a container rebuilds the layout.
    pub fn apply(&mut self, delta: &Delta) -> Result<(), ApplyError> {
        if delta.pod_removals.is_empty() && delta.container_removals.is_empty() {
            // upserts set values: those written before a miss are written again below
            let layout = &self.pods.layout;
            if let Some((_, _, s)) = delta.upserts.first() {
                self.pods.samples.follow(s);
            }
            let mut cursor = Cursor::default();
            let hit = delta.upserts.iter().all(|(key, c, s)| {
                match cursor.next(layout, key, c).or_else(|| layout.slot(key, c)) {
                    Some(slot) => {
                        self.pods.samples.set(slot, *s);
                        cursor.follow(layout, slot);
                        true
                    }
                    None => false,
                }
            });
            if hit {
                self.set_node(&delta.node);
                return Ok(());
            }
        }
        let mut view = self.to_view();
        let applied = crate::apply(&mut view, delta);
        *self = Self::from(view);
        applied
    }

    /// Writes the update's samples and the node's change when the table's names are the
    /// very names the update refers to ([`PodNames::same`]) and every slot is in range. Nothing is
    /// written otherwise, and the answer is false.
    pub fn write(&mut self, update: &SlotSamples) -> bool {
        let table = &mut self.pods;
        let samples = &update.samples;
        if !Arc::ptr_eq(&table.layout, &update.names.0)
            || samples
                .iter()
                .any(|(slot, _)| *slot as usize >= table.samples.len())
        {
            return false;
        }
        if let Some((_, s)) = samples.first() {
            table.samples.follow(s);
        }
        for (slot, s) in samples {
            table.samples.set(*slot as usize, *s);
        }
        self.set_node(&update.node);
        true
    }

    /// Takes a [`Reshape`] when the table's names are the very names it was decoded against:
    /// each container the table keeps carries its sample to its slot in the new names, the
    /// delta's samples are written, the node's change is set, and the new names become the
    /// table's. False, with nothing changed, when the names are not the same or a container of
    /// the new names would have no sample (the two sides disagree: the stream must resync).
    ///
    /// Both name tables are sorted the same way, so carrying is one merge walk, with no view
    /// built and no name looked up but the delta's own.
    pub fn reshape(&mut self, reshape: &Reshape) -> bool {
        let old = &self.pods.layout;
        if !Arc::ptr_eq(old, &reshape.before.0) {
            return false;
        }
        let new = &reshape.after.0;
        let mut samples: Vec<Option<Sample>> = vec![None; new.containers.len()];
        let mut from = 0;
        for (pod, key) in new.pods.iter().enumerate() {
            from += old.pods[from..].partition_point(|k| k < key);
            let Some(held) = old.pods.get(from) else {
                break;
            };
            if held != key {
                continue;
            }
            let (was, now) = (old.range(from), new.range(pod));
            let mut at = was.start;
            for slot in now {
                let name = &new.containers[slot];
                at += old.containers[at..was.end].partition_point(|c| c < name);
                if at < was.end && old.containers[at] == *name {
                    samples[slot] = Some(self.pods.samples.get(at));
                }
            }
        }
        for (key, c, s) in &reshape.delta.upserts {
            match new.slot(key, c) {
                Some(slot) => samples[slot] = Some(*s),
                None => return false,
            }
        }
        let mut packed = Samples::with_capacity(samples.len());
        for s in samples {
            match s {
                Some(s) => packed.push(s),
                None => return false,
            }
        }
        let samples = packed;
        self.pods = PodTable {
            layout: Arc::clone(new),
            samples,
        };
        self.set_node(&reshape.delta.node);
        true
    }

    fn set_node(&mut self, change: &NodeChange) {
        match change {
            NodeChange::Unchanged => {}
            NodeChange::Set(s) => self.node = Some(*s),
            NodeChange::Clear => self.node = None,
        }
    }
}

impl From<NodeView> for NodeUsage {
    fn from(view: NodeView) -> Self {
        let containers = view.container_count();
        let mut layout = Layout {
            pods: Vec::with_capacity(view.pods.len()),
            ends: Vec::with_capacity(view.pods.len()),
            containers: Vec::with_capacity(containers),
        };
        let mut samples = Samples::with_capacity(containers);
        for (key, pod) in view.pods {
            for (c, s) in pod.containers {
                layout.containers.push(c);
                samples.push(s);
            }
            // a node holds far fewer than 2^32 containers (the agent bounds a kubelet read)
            layout.pods.push(key);
            layout.ends.push(layout.containers.len() as u32);
        }
        Self {
            node: view.node,
            pods: PodTable {
                layout: Arc::new(layout),
                samples,
            },
        }
    }
}

impl PartialEq<NodeView> for NodeUsage {
    fn eq(&self, other: &NodeView) -> bool {
        self.node == other.node
            && self.pods.len() == other.pods.len()
            && self.pods.iter().zip(&other.pods).all(|((k, p), (ok, op))| {
                k == ok
                    && p.names.len() == op.containers.len()
                    && p.containers()
                        .zip(&op.containers)
                        .all(|((c, s), (oc, os))| c == oc && s == *os)
            })
    }
}
