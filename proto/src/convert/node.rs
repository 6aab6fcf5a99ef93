//! The aggregator's side of one stream when the aggregator keeps the node's usage as a
//! [`NodeUsage`]: the same validation as [`StreamDecoder`], with a dictionary that points
//! into the node's [`PodNames`] instead of holding names of its own.
//!
//! Between messages a [`NodeDecoder`] holds the wire id of each pod and each container slot
//! of the node's table, in the table's order (4 bytes an id, where [`StreamDecoder`] holds
//! 16–24 bytes of names and ids; nothing but the first when they are consecutive, as an
//! agent's snapshot defines them), plus the rare id defined without a sample yet. The common
//! delta — new samples for containers the node already reports — then decodes to samples by slot
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
    /// The id of each pod in `names`, by pod index.
    pod_ids: Ids,
    /// The id of each container in `names`, by slot. Agents send a delta's samples in the
    /// table's order, so the slot of each is found next to the previous one's.
    slot_ids: Ids,
    /// Pods defined but without a container in `names` yet (or a second id for a pod that
    /// has one), sorted by id.
    pending_pods: IdMap<PodKey>,
    /// Containers defined but without a sample yet (or a second id for a container that has
    /// one): (id, (pod id, name)), sorted by id.
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
            pod_ids: Ids::default(),
            slot_ids: Ids::default(),
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
        let ids = &self.slot_ids;
        // the slot after the previous sample's, or one further on: a walk through the table
        // while the samples come in its order; by id, sorted once, when they do not
        let mut next = 0;
        let mut by_id = None;
        for cu in &msg.usages {
            let id = cu.container_id;
            let slot = match ids.get(next) {
                Some(k) if k == id => next,
                _ => match find_slot(ids, next, id, &mut by_id) {
                    Some(slot) => slot,
                    None => return Ok(None),
                },
            };
            next = slot + 1;
            // a node holds far fewer than 2^32 containers (see [`Limits`])
            samples.push((slot as u32, usage_of(cu, msg.base_timestamp_ms)?));
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
        let mut pods = Vec::with_capacity(self.pod_ids.len() + self.pending_pods.len());
        for (index, id) in self.pod_ids.iter().enumerate() {
            if let Some(key) = self.names.pod(index) {
                pods.push((id, key.clone()));
            }
        }
        pods.append(&mut self.pending_pods.0);
        pods.sort_unstable_by_key(|(id, _)| *id);
        let mut containers =
            Vec::with_capacity(self.slot_ids.len() + self.pending_containers.len());
        for (slot, id) in self.slot_ids.iter().enumerate() {
            if let Some((pod, name)) = self.names.container(slot)
                && let Some(pod_id) = self.pod_ids.get(pod)
            {
                containers.push((id, (pod_id, name.clone())));
            }
        }
        containers.append(&mut self.pending_containers.0);
        containers.sort_unstable_by_key(|(id, _)| *id);
        self.inner.pods = IdMap(pods);
        self.inner.containers = IdMap(containers);
        self.pod_ids = Ids::default();
        self.slot_ids = Ids::default();
    }

    /// Takes `names` as the node's and turns the full dictionary into tables pointing
    /// into them; the dictionary is emptied.
    fn compact(&mut self, names: PodNames) {
        let pods = std::mem::take(&mut self.inner.pods.0);
        let containers = std::mem::take(&mut self.inner.containers.0);
        // each pod and container of the names gets its id; `None` until it has one
        let mut pod_ids = vec![None; names.len()];
        let mut pending = Vec::new();
        for (id, key) in pods {
            match names.pod_index(&key) {
                Some(i) if pod_ids[i].is_none() => pod_ids[i] = Some(id),
                _ => pending.push((id, key)),
            }
        }
        let mut by_id: Vec<(u32, usize)> = (0..)
            .zip(&pod_ids)
            .filter_map(|(i, id)| Some(((*id)?, i)))
            .collect();
        by_id.sort_unstable();
        let mut slot_ids = vec![None; names.container_count()];
        let mut pending_containers = Vec::new();
        for (id, (pod, name)) in containers {
            let key = pods_key(&by_id, &pending, &names, pod);
            match key.and_then(|key| names.slot(key, &name)) {
                Some(slot) if slot_ids[slot].is_none() => slot_ids[slot] = Some(id),
                _ => pending_containers.push((id, (pod, name))),
            }
        }
        pending.shrink_to_fit();
        pending_containers.shrink_to_fit();
        // every pod and container of the names was defined on this stream (the names come
        // from its own messages), so each has its id
        self.pod_ids = Ids::new(&pod_ids);
        self.slot_ids = Ids::new(&slot_ids);
        self.names = names;
        self.pending_pods = IdMap(pending);
        self.pending_containers = IdMap(pending_containers);
    }

    /// Holds nothing, as after a failed message.
    fn forget(&mut self) {
        self.inner.pods = IdMap::default();
        self.inner.containers = IdMap::default();
        self.names = PodNames::default();
        self.pod_ids = Ids::default();
        self.slot_ids = Ids::default();
        self.pending_pods = IdMap::default();
        self.pending_containers = IdMap::default();
    }
}

/// The slot of container `id` when it is not at `next`: further on while the samples have
/// come in the table's order (`by_id` is `None`), else by id, from an index of `ids` sorted
/// once (so samples in any order cost O(n log n), not O(n²)).
fn find_slot(
    ids: &Ids,
    next: usize,
    id: u32,
    by_id: &mut Option<Vec<(u32, usize)>>,
) -> Option<usize> {
    let ids = match ids {
        Ids::Run { first, len } => {
            let at = id.checked_sub(*first)?;
            return (at < *len).then_some(at as usize);
        }
        Ids::List(ids) => ids,
    };
    if by_id.is_none()
        && let Some(ahead) = ids[next..].iter().position(|k| *k == id)
    {
        return Some(next + ahead);
    }
    let by_id = by_id.get_or_insert_with(|| {
        let mut v: Vec<_> = ids.iter().copied().zip(0..).collect();
        v.sort_unstable();
        v
    });
    let i = by_id.binary_search_by_key(&id, |(k, _)| *k).ok()?;
    Some(by_id[i].1)
}

/// The wire id of each pod, or of each container slot, of a node's names, in their order.
///
/// An agent hands out ids in the order it defines names, and its snapshot defines them in
/// its table's order, which is the order of the names: until pods come and go, the ids are
/// consecutive, and only the first is held.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ids {
    /// `len` ids, `first` and the ones after it.
    Run {
        /// The first id.
        first: u32,
        /// How many.
        len: u32,
    },
    /// Any ids, one per position.
    List(Box<[u32]>),
}

impl Default for Ids {
    fn default() -> Self {
        Self::Run { first: 0, len: 0 }
    }
}

impl Ids {
    /// The ids of `ids`, each set (an unset one stands as `u32::MAX`). A run never reaches
    /// `u32::MAX`, so `first + len` does not overflow.
    fn new(ids: &[Option<u32>]) -> Self {
        debug_assert!(ids.iter().all(Option::is_some), "an id for each");
        let first = ids.first().copied().flatten().unwrap_or(0);
        let consecutive = (0..)
            .zip(ids)
            .all(|(i, id)| id.is_some_and(|id| id != u32::MAX && first.checked_add(i) == Some(id)));
        match u32::try_from(ids.len()) {
            Ok(len) if consecutive => Self::Run { first, len },
            _ => Self::List(ids.iter().map(|id| id.unwrap_or(u32::MAX)).collect()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Run { len, .. } => *len as usize,
            Self::List(ids) => ids.len(),
        }
    }

    /// The id at `position`.
    fn get(&self, position: usize) -> Option<u32> {
        match self {
            Self::Run { first, len } => {
                let at = u32::try_from(position).ok().filter(|at| at < len)?;
                Some(first + at)
            }
            Self::List(ids) => ids.get(position).copied(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// The key of pod `id`, whether the names hold it (`by_id`: (id, index into `names`), sorted
/// by id) or it is pending.
fn pods_key<'a>(
    by_id: &[(u32, usize)],
    pending: &'a [(u32, PodKey)],
    names: &'a PodNames,
    id: u32,
) -> Option<&'a PodKey> {
    match by_id.binary_search_by_key(&id, |(k, _)| *k) {
        Ok(i) => names.pod(by_id[i].1),
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

    /// `pods` pods of two containers each, every container with a sample of its own.
    fn two_containers_a_pod(pods: u64) -> NodeView {
        let mut view = NodeView::default();
        for p in 0..pods {
            let key = PodKey::new("default", &format!("pod-{p}")).unwrap();
            let pod = view.pods.entry(key).or_default();
            for (c, name) in (0..).zip(["app", "sidecar"]) {
                pod.containers.insert(
                    ContainerName::new(name).unwrap(),
                    crate::convert::tests::sample(10 * p + c, 2, 3),
                );
            }
        }
        view
    }

    /// Each id in use costs at most its 4 bytes between messages (nothing but the first
    /// while they are consecutive), and nothing else but the names the table shares.
    #[test]
    fn holds_ids_not_names_between_messages() {
        let view = two_containers_a_pod(30);
        let mut enc = StreamEncoder::new();
        let mut dec = NodeDecoder::with_names(Limits::default(), Arc::default());
        let table = dec.snapshot(&enc.snapshot(&view)).unwrap();
        assert!(dec.names.same(&table.pods.names()));
        assert_eq!((dec.pod_ids.len(), dec.slot_ids.len()), (30, 60));
        // the snapshot defined them in the table's order: consecutive, held as a run
        assert!(matches!(dec.pod_ids, Ids::Run { len: 30, .. }));
        assert!(matches!(dec.slot_ids, Ids::Run { len: 60, .. }));
        assert_eq!(
            dec.inner.pods.0.capacity() + dec.inner.containers.0.capacity(),
            0
        );
        assert_eq!(dec.pending_pods.len() + dec.pending_containers.len(), 0);
    }

    /// A snapshot numbered as agents before the two runs number it (each pod, then its
    /// containers) decodes to the same table, its ids held as lists.
    #[test]
    fn interleaved_ids_decode_the_same() {
        let view = two_containers_a_pod(3);
        let mut snap = StreamEncoder::new().snapshot(&view);
        // pods 0, 1, 2 and containers 3..9 become pod 0, its containers 1 and 2, pod 3, ...
        let pods = snap.pods.len() as u32;
        let renumber = |id: u32| {
            if id < pods {
                id * 3
            } else {
                (id - pods) / 2 * 3 + 1 + (id - pods) % 2
            }
        };
        snap.pods.iter_mut().for_each(|p| p.id = renumber(p.id));
        for c in &mut snap.containers {
            (c.id, c.pod_id) = (renumber(c.id), renumber(c.pod_id));
        }
        snap.usages
            .iter_mut()
            .for_each(|u| u.container_id = renumber(u.container_id));
        let mut dec = NodeDecoder::with_names(Limits::default(), Arc::default());
        let table = dec.snapshot(&snap).unwrap();
        assert_eq!(table, view);
        assert_eq!(dec.pod_ids, Ids::List([0, 3, 6].into()));
        assert_eq!(dec.slot_ids, Ids::List([1, 2, 4, 5, 7, 8].into()));
    }

    /// Consecutive ids are held as a run, any others as a list; both answer the same.
    #[test]
    fn ids_run_or_listed() {
        let run = Ids::new(&[Some(5), Some(6), Some(7)]);
        assert_eq!(run, Ids::Run { first: 5, len: 3 });
        assert_eq!(run.iter().collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!((run.get(2), run.get(3)), (Some(7), None));
        for listed in [
            vec![Some(5), Some(7)],
            vec![Some(7), Some(6)],
            vec![Some(u32::MAX - 1), Some(u32::MAX)],
        ] {
            let ids = Ids::new(&listed);
            assert!(matches!(ids, Ids::List(_)), "{listed:?}");
            assert_eq!(ids.iter().map(Some).collect::<Vec<_>>(), listed);
        }
        assert_eq!(Ids::new(&[]), Ids::default());
        assert_eq!(Ids::new(&[Some(u32::MAX)]).get(0), Some(u32::MAX));
        // slots by id: in the run, below it, past it
        let mut by_id = None;
        assert_eq!(find_slot(&run, 0, 6, &mut by_id), Some(1));
        assert_eq!(find_slot(&run, 0, 4, &mut by_id), None);
        assert_eq!(find_slot(&run, 0, 8, &mut by_id), None);
    }

    /// Samples in another order than the table's find their slots all the same.
    #[test]
    fn samples_in_any_order() {
        let view = two_containers_a_pod(4);
        let mut enc = StreamEncoder::new();
        let mut dec = NodeDecoder::with_names(Limits::default(), Arc::default());
        let table = dec.snapshot(&enc.snapshot(&view)).unwrap();
        let names = table.pods.names();
        let next = with_new_samples(&view);
        let delta = enc.delta(&diff(&view, &next));
        // in order, every other one left out, reversed, and shuffled
        let orders: [fn(usize) -> Vec<usize>; 4] = [
            |n| (0..n).collect(),
            |n| (0..n).step_by(2).collect(),
            |n| (0..n).rev().collect(),
            |n| (0..n).map(|i| (i * 5 + 3) % n).collect(),
        ];
        // the ids as the snapshot left them (a run), and the same ids listed one by one
        let listed = Ids::List(dec.slot_ids.iter().collect());
        assert!(matches!(dec.slot_ids, Ids::Run { .. }));
        for (ids, order) in orders
            .iter()
            .map(|o| (None, o))
            .chain(orders.iter().map(|o| (Some(listed.clone()), o)))
        {
            if let Some(ids) = ids {
                dec.slot_ids = ids;
            }
            let mut msg = delta.clone();
            msg.usages = order(delta.usages.len())
                .into_iter()
                .map(|i| delta.usages[i])
                .collect();
            let Ok(NodeDelta::Samples(s)) = dec.delta(&msg) else {
                panic!("steady samples decode by slot");
            };
            assert_eq!(s.samples.len(), msg.usages.len());
            // each sample is the one of the container in its slot
            for (slot, sample) in &s.samples {
                let (pod, name) = names.container(*slot as usize).unwrap();
                let key = names.pod(pod).unwrap();
                assert_eq!(next.pods[key].containers[name], *sample, "slot {slot}");
            }
        }
        // an id the table does not hold, after others
        let mut msg = delta.clone();
        msg.usages[3].container_id = 999;
        assert!(matches!(
            dec.delta(&msg),
            Err(WireError::UnknownId { id: 999, .. })
        ));
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
        assert_eq!(dec.slot_ids, Ids::Run { first: 2, len: 1 });
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
        assert!(dec.pending_pods.len() + dec.pod_ids.len() == 0);
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
