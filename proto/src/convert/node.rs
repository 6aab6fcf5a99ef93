//! The aggregator's side of one stream when the aggregator keeps the node's usage as a
//! [`NodeUsage`]: the same validation as [`StreamDecoder`], with a dictionary that points
//! into the node's [`PodNames`] instead of holding names of its own.
//!
//! Between messages a [`NodeDecoder`] holds, for each wire id in the node's table, the pod's
//! index or the container's slot there (8 bytes an id, where [`StreamDecoder`] holds 16–24
//! bytes of names and ids), plus the rare id defined without a sample yet. The common delta —
//! new samples for containers the node already reports — then decodes to samples by slot
//! ([`SlotSamples`]): no names looked up, copied or compared, on either side. A message that
//! defines or removes ids rebuilds the full dictionary from the table's names, decodes with
//! [`StreamDecoder`] and works out the names the table will have after it
//! ([`PodNames::after`]), so the two sides agree on every slot.

use std::sync::Arc;

use kubepulse_model::{ContainerName, Names, NodeUsage, PodKey, PodNames, Reshape, SlotSamples};

use super::{IdMap, Limits, StreamDecoder, WireError, node_change, usage_of};
use crate::v1;

/// The aggregator side of one stream. See the module documentation.
#[derive(Debug)]
pub struct NodeDecoder {
    /// Its dictionaries are empty between messages.
    inner: StreamDecoder,
    /// The node's names after the last message.
    names: PodNames,
    /// Pods in `names`: (id, pod index), sorted by id.
    pods: Vec<(u32, u32)>,
    /// Containers in `names`: (id, slot), sorted by id.
    slots: Vec<(u32, u32)>,
    /// Pods defined but without a container in `names` yet, sorted by id.
    pending_pods: IdMap<PodKey>,
    /// Containers defined but without a sample yet: (id, (pod id, name)), sorted by id.
    pending_containers: IdMap<(u32, ContainerName)>,
}

/// A decoded delta, in the form the node's table takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeDelta {
    /// New samples for containers the node reports.
    Samples(SlotSamples),
    /// A delta that adds or removes pods or containers, with the names it was decoded
    /// against and the names the table has after it (the table takes these very names:
    /// later samples refer to them).
    Reshape(Reshape),
}

impl NodeDecoder {
    /// A decoder whose namespace and container names share their text with every other
    /// decoder given the same `names` (as [`StreamDecoder::with_names`]).
    pub fn with_names(limits: Limits, names: Arc<Names>) -> Self {
        Self {
            inner: StreamDecoder::with_names(limits, names),
            names: PodNames::default(),
            pods: Vec::new(),
            slots: Vec::new(),
            pending_pods: IdMap::default(),
            pending_containers: IdMap::default(),
        }
    }

    /// Decodes a snapshot into the node's whole table.
    pub fn snapshot(&mut self, msg: &v1::Snapshot) -> Result<NodeUsage, WireError> {
        self.forget();
        let usage = NodeUsage::from(self.inner.snapshot(msg).inspect_err(|_| self.forget())?);
        self.compact(usage.pods.names());
        Ok(usage)
    }

    /// Decodes a delta. Errors are those of [`StreamDecoder::delta`], plus
    /// [`WireError::Apply`] for a delta that does not fit the node's view. After an error
    /// the decoder holds nothing: the stream must resync.
    pub fn delta(&mut self, msg: &v1::Delta) -> Result<NodeDelta, WireError> {
        let steady = msg.removed_pods.is_empty()
            && msg.removed_containers.is_empty()
            && msg.new_pods.is_empty()
            && msg.new_containers.is_empty();
        if steady && let Some(samples) = self.by_slot(msg).inspect_err(|_| self.forget())? {
            return Ok(NodeDelta::Samples(samples));
        }
        self.reshape(msg).inspect_err(|_| self.forget())
    }

    /// The delta as samples by slot, or `None` when one of its containers is not in the
    /// table (a container defined earlier gets its first sample, or an unknown id).
    fn by_slot(&self, msg: &v1::Delta) -> Result<Option<SlotSamples>, WireError> {
        let node = node_change(msg)?;
        let mut samples = Vec::with_capacity(msg.usages.len());
        let mut hint = 0;
        for cu in &msg.usages {
            let id = cu.container_id;
            let found = match self.slots.get(hint) {
                Some((k, _)) if *k == id => Some(hint),
                _ => self.slots.binary_search_by_key(&id, |(k, _)| *k).ok(),
            };
            let Some(i) = found else {
                return Ok(None);
            };
            hint = i + 1;
            samples.push((self.slots[i].1, usage_of(cu, msg.base_timestamp_ms)?));
        }
        Ok(Some(SlotSamples {
            names: self.names.clone(),
            node,
            samples,
        }))
    }

    fn reshape(&mut self, msg: &v1::Delta) -> Result<NodeDelta, WireError> {
        self.inflate();
        let delta = self.inner.delta(msg)?;
        let after = self
            .names
            .after(&delta)
            .map_err(|e| WireError::Apply(e.to_string()))?;
        let before = std::mem::take(&mut self.names);
        self.compact(after.clone());
        Ok(NodeDelta::Reshape(Reshape {
            before,
            delta,
            after,
        }))
    }

    /// Rebuilds the full dictionary of [`StreamDecoder`] from the tables and the names.
    fn inflate(&mut self) {
        let mut pods = Vec::with_capacity(self.pods.len() + self.pending_pods.len());
        // each pod of the table has exactly one id (its containers were defined under it)
        let mut pod_ids = vec![0; self.names.len()];
        for (id, index) in &self.pods {
            pod_ids[*index as usize] = *id;
            if let Some(key) = self.names.pod(*index as usize) {
                pods.push((*id, key.clone()));
            }
        }
        pods.append(&mut self.pending_pods.0);
        pods.sort_unstable_by_key(|(id, _)| *id);
        let mut containers = Vec::with_capacity(self.slots.len() + self.pending_containers.len());
        for (id, slot) in &self.slots {
            if let Some((pod, name)) = self.names.container(*slot as usize) {
                containers.push((*id, (pod_ids[pod], name.clone())));
            }
        }
        containers.append(&mut self.pending_containers.0);
        containers.sort_unstable_by_key(|(id, _)| *id);
        self.inner.pods = IdMap(pods);
        self.inner.containers = IdMap(containers);
        self.pods = Vec::new();
        self.slots = Vec::new();
    }

    /// Takes `names` as the node's and turns the full dictionary into tables pointing
    /// into them; the dictionary is emptied.
    fn compact(&mut self, names: PodNames) {
        let pods = std::mem::take(&mut self.inner.pods.0);
        let containers = std::mem::take(&mut self.inner.containers.0);
        let mut in_table = Vec::with_capacity(pods.len());
        let mut pending = Vec::new();
        for (id, key) in pods {
            match names.pod_index(&key) {
                // a node holds far fewer than 2^32 pods or containers (see [`Limits`])
                Some(i) => in_table.push((id, i as u32)),
                None => pending.push((id, key)),
            }
        }
        let mut slots = Vec::with_capacity(containers.len());
        let mut pending_containers = Vec::new();
        for (id, (pod, name)) in containers {
            let key = pods_key(&in_table, &pending, &names, pod);
            match key.and_then(|key| names.slot(key, &name)) {
                Some(slot) => slots.push((id, slot as u32)),
                None => pending_containers.push((id, (pod, name))),
            }
        }
        in_table.shrink_to_fit();
        pending.shrink_to_fit();
        slots.shrink_to_fit();
        pending_containers.shrink_to_fit();
        self.names = names;
        self.pods = in_table;
        self.slots = slots;
        self.pending_pods = IdMap(pending);
        self.pending_containers = IdMap(pending_containers);
    }

    /// Holds nothing, as after a failed message.
    fn forget(&mut self) {
        self.inner.pods = IdMap::default();
        self.inner.containers = IdMap::default();
        self.names = PodNames::default();
        self.pods = Vec::new();
        self.slots = Vec::new();
        self.pending_pods = IdMap::default();
        self.pending_containers = IdMap::default();
    }
}

/// The key of pod `id`, whether the table holds it (`in_table`, by index into `names`) or it
/// is pending.
fn pods_key<'a>(
    in_table: &[(u32, u32)],
    pending: &'a [(u32, PodKey)],
    names: &'a PodNames,
    id: u32,
) -> Option<&'a PodKey> {
    match in_table.binary_search_by_key(&id, |(k, _)| *k) {
        Ok(i) => names.pod(in_table[i].1 as usize),
        Err(_) => pending
            .binary_search_by_key(&id, |(k, _)| *k)
            .ok()
            .map(|i| &pending[i].1),
    }
}

#[cfg(test)]
mod tests {
    use kubepulse_model::{Delta, NodeView, diff};
    use prost::Message;

    use super::*;
    use crate::StreamEncoder;
    use crate::convert::tests::arb_view;
    use proptest::prelude::*;

    proptest! {
        /// The table a node decoder and the store's `write`/`apply` build is the one the
        /// model builds from the same stream, whatever the stream.
        #[test]
        fn follows_the_model(
            steps in prop::collection::vec((arb_view(), any::<bool>()), 1..10),
        ) {
            let mut enc = StreamEncoder::new();
            let mut dec = NodeDecoder::with_names(Limits::default(), Arc::default());
            let mut prev = NodeView::default();
            let wire = enc.snapshot(&prev).encode_to_vec();
            let mut table = dec.snapshot(&v1::Snapshot::decode(&*wire).unwrap()).unwrap();
            for (v, same_names) in steps {
                // either other names, or the same names with new samples
                let v = if same_names { with_new_samples(&prev) } else { v };
                let wire = enc.delta(&diff(&prev, &v)).encode_to_vec();
                match dec.delta(&v1::Delta::decode(&*wire).unwrap()).unwrap() {
                    NodeDelta::Samples(s) => prop_assert!(table.write(&s)),
                    NodeDelta::Reshape(r) => {
                        prop_assert!(!same_names, "same names decode to samples by slot");
                        prop_assert!(table.reshape(&r));
                    }
                }
                prop_assert_eq!(&table, &v);
                prev = v;
            }
        }
    }

    fn with_new_samples(view: &NodeView) -> NodeView {
        let mut next = view.clone();
        for s in next
            .pods
            .values_mut()
            .flat_map(|p| p.containers.values_mut())
        {
            s.usage.cpu_nanocores += 1;
            s.timestamp.0 += 1;
        }
        next
    }

    /// Each id in use costs its 8 bytes between messages, and nothing else but the names
    /// the table shares.
    #[test]
    fn holds_ids_not_names_between_messages() {
        let mut view = NodeView::default();
        for p in 0..30 {
            let key = PodKey::new("default", &format!("pod-{p}")).unwrap();
            let pod = view.pods.entry(key).or_default();
            for c in ["app", "sidecar"] {
                pod.containers.insert(
                    ContainerName::new(c).unwrap(),
                    crate::convert::tests::sample(1, 2, 3),
                );
            }
        }
        let mut enc = StreamEncoder::new();
        let mut dec = NodeDecoder::with_names(Limits::default(), Arc::default());
        let table = dec.snapshot(&enc.snapshot(&view)).unwrap();
        assert!(dec.names.same(&table.pods.names()));
        assert_eq!((dec.pods.len(), dec.slots.len()), (30, 60));
        assert_eq!(
            dec.inner.pods.0.capacity() + dec.inner.containers.0.capacity(),
            0
        );
        assert_eq!(dec.pending_pods.len() + dec.pending_containers.len(), 0);
    }

    /// A container defined in one delta and given its first sample in a later one.
    #[test]
    fn a_container_defined_before_its_sample() {
        let mut dec = NodeDecoder::with_names(Limits::default(), Arc::default());
        dec.snapshot(&v1::Snapshot::default()).unwrap();
        let define = v1::Delta {
            new_pods: vec![v1::PodDef {
                id: 1,
                namespace: "default".into(),
                name: "web".into(),
            }],
            new_containers: vec![v1::ContainerDef {
                id: 2,
                pod_id: 1,
                name: "app".into(),
            }],
            ..Default::default()
        };
        let NodeDelta::Reshape(r) = dec.delta(&define).unwrap() else {
            panic!("definitions reshape");
        };
        assert_eq!(r.delta, Delta::default());
        assert!(r.after.is_empty());
        assert_eq!(
            (dec.pending_pods.len(), dec.pending_containers.len()),
            (1, 1)
        );
        let first = v1::Delta {
            usages: vec![v1::ContainerUsage {
                container_id: 2,
                usage: Some(v1::Usage {
                    window_ns: 1,
                    ..Default::default()
                }),
            }],
            ..Default::default()
        };
        let NodeDelta::Reshape(r) = dec.delta(&first).unwrap() else {
            panic!("a first sample reshapes");
        };
        assert_eq!(r.delta.upserts.len(), 1);
        assert_eq!(r.after.container_count(), 1);
        assert_eq!(dec.slots, vec![(2, 0)]);
        // the second sample is a steady one
        assert!(matches!(dec.delta(&first), Ok(NodeDelta::Samples(s)) if s.samples.len() == 1));
    }

    /// A delta that removes what the node does not report is refused here, and the decoder
    /// is left empty (the stream resyncs).
    #[test]
    fn refuses_a_delta_that_does_not_fit() {
        let mut dec = NodeDecoder::with_names(Limits::default(), Arc::default());
        dec.snapshot(&v1::Snapshot {
            pods: vec![v1::PodDef {
                id: 1,
                namespace: "default".into(),
                name: "web".into(),
            }],
            ..Default::default()
        })
        .unwrap();
        // pod 1 is defined but has no container in the view
        let remove = v1::Delta {
            removed_pods: vec![1],
            ..Default::default()
        };
        assert!(matches!(dec.delta(&remove), Err(WireError::Apply(_))));
        assert!(dec.pending_pods.len() + dec.pods.len() == 0);
        assert!(matches!(
            dec.delta(&v1::Delta {
                usages: vec![v1::ContainerUsage {
                    container_id: 9,
                    usage: None,
                }],
                ..Default::default()
            }),
            Err(WireError::UnknownId { id: 9, .. })
        ));
    }
}
