//! Server-side `meta.k8s.io` Table output (what `kubectl get --raw` with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and `kubectl get nodemetrics` see),
//! built like metrics-server's table convertor: columns `Name`, one per usage key (`cpu`,
//! `memory`), `Window`; pod cells are sums over containers. Table has no protobuf form, so it
//! is always JSON.

use std::collections::BTreeMap;

use kubepulse_model::Timestamp;

use super::json::{
    TextCache, TimeText, push_str, write_node_fields, write_object_meta, write_pod_fields,
    write_type_meta,
};
use super::{IncludeObject, TableOptions, TableVersion};
use crate::api::{ApiVersion, NodeMetrics, PodMetrics};
use crate::quantity::{write_cpu, write_memory};

/// Nodes as a Table.
pub(crate) fn nodes(
    items: &[NodeMetrics],
    v: ApiVersion,
    opts: &TableOptions,
    now: Timestamp,
) -> Vec<u8> {
    let mut table = TableWriter::new(opts, now, items.len());
    if !items.is_empty() {
        table.columns(true);
    }
    for node in items {
        let usage = node.sample.usage;
        table.row(
            node.name.as_str(),
            Some((usage.cpu_nanocores, usage.memory_bytes)),
            node.sample.window.as_nanos(),
        );
        table.object(|out, creation, times| match opts.include_object {
            IncludeObject::Object => {
                write_type_meta(out, "NodeMetrics", v.group_version());
                write_node_fields(out, node, creation, times);
                out.push(b'}');
            }
            _ => write_partial(
                out,
                opts.version,
                node.name.as_str(),
                None,
                &node.labels,
                creation,
            ),
        });
    }
    table.finish()
}

/// Pods as a Table. Like metrics-server, the usage columns come from the first pod that has
/// containers; pods before it get only `Name` and `Window` cells, pods after it without
/// containers get `0` sums.
pub(crate) fn pods(
    items: &[PodMetrics],
    v: ApiVersion,
    opts: &TableOptions,
    now: Timestamp,
) -> Vec<u8> {
    let mut table = TableWriter::new(opts, now, items.len());
    let first_with_usage = items.iter().position(|p| !p.containers.is_empty());
    if !items.is_empty() {
        table.columns(first_with_usage.is_some());
    }
    for (idx, pod) in items.iter().enumerate() {
        let sums = first_with_usage.is_some_and(|first| idx >= first).then(|| {
            pod.containers
                .iter()
                .fold((0u64, 0u64), |(cpu, memory), c| {
                    (
                        cpu.saturating_add(c.usage.cpu_nanocores),
                        memory.saturating_add(c.usage.memory_bytes),
                    )
                })
        });
        table.row(pod.key.name.as_str(), sums, pod.window.as_nanos());
        table.object(|out, creation, times| match opts.include_object {
            IncludeObject::Object => {
                write_type_meta(out, "PodMetrics", v.group_version());
                write_pod_fields(out, pod, creation, times);
                out.push(b'}');
            }
            _ => write_partial(
                out,
                opts.version,
                pod.key.name.as_str(),
                Some(pod.key.namespace.as_str()),
                &pod.labels,
                creation,
            ),
        });
    }
    table.finish()
}

// === private helpers ===

/// `PartialObjectMetadata` of the Table's group version.
fn write_partial(
    out: &mut Vec<u8>,
    version: TableVersion,
    name: &str,
    namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
    creation: &TimeText,
) {
    write_type_meta(out, "PartialObjectMetadata", version.api_version());
    out.extend_from_slice(b"\"metadata\":");
    write_object_meta(out, name, namespace, creation, labels);
    out.push(b'}');
}

struct TableWriter<'o> {
    out: Vec<u8>,
    opts: &'o TableOptions,
    creation: TimeText,
    times: TextCache,
    rows: usize,
    n_items: usize,
}

impl<'o> TableWriter<'o> {
    fn new(opts: &'o TableOptions, now: Timestamp, n_items: usize) -> Self {
        let mut out = Vec::with_capacity(512 + n_items * 256);
        write_type_meta(&mut out, "Table", opts.version.api_version());
        out.extend_from_slice(b"\"metadata\":{},\"columnDefinitions\":");
        if n_items == 0 {
            out.extend_from_slice(b"null");
        }
        Self {
            out,
            opts,
            creation: TimeText::new(now),
            times: TextCache::default(),
            rows: 0,
            n_items,
        }
    }

    fn columns(&mut self, with_usage: bool) {
        let out = &mut self.out;
        out.push(b'[');
        column(out, "Name", "name", "Name of the resource");
        if with_usage {
            out.push(b',');
            column(out, "cpu", "quantity", "");
            out.push(b',');
            column(out, "memory", "quantity", "");
        }
        out.push(b',');
        column(out, "Window", "duration", "");
        out.push(b']');
    }

    /// Opens a row and writes its cells; `sums` is `None` when the row has no usage cells.
    fn row(&mut self, name: &str, sums: Option<(u64, u64)>, window: u64) {
        let out = &mut self.out;
        out.extend_from_slice(if self.rows == 0 {
            b",\"rows\":[{\"cells\":["
        } else {
            b",{\"cells\":["
        });
        self.rows += 1;
        push_str(out, name);
        if let Some((cpu, memory)) = sums {
            out.extend_from_slice(b",\"");
            write_cpu(out, cpu);
            out.extend_from_slice(b"\",\"");
            write_memory(out, memory);
            out.push(b'"');
        }
        out.extend_from_slice(b",\"");
        self.times.push_window(out, window);
        out.extend_from_slice(b"\"]");
    }

    /// Closes the row with its `object` (null for `includeObject=None`).
    fn object(&mut self, write: impl FnOnce(&mut Vec<u8>, &TimeText, &mut TextCache)) {
        self.out.extend_from_slice(b",\"object\":");
        if self.opts.include_object == IncludeObject::None {
            self.out.extend_from_slice(b"null");
        } else {
            write(&mut self.out, &self.creation, &mut self.times);
        }
        self.out.push(b'}');
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n_items == 0 {
            self.out.extend_from_slice(b",\"rows\":null");
        } else {
            self.out.push(b']');
        }
        self.out.extend_from_slice(b"}\n");
        self.out
    }
}

fn column(out: &mut Vec<u8>, name: &str, format: &str, description: &str) {
    out.extend_from_slice(b"{\"name\":");
    push_str(out, name);
    out.extend_from_slice(b",\"type\":\"string\",\"format\":");
    push_str(out, format);
    out.extend_from_slice(b",\"description\":");
    push_str(out, description);
    out.extend_from_slice(b",\"priority\":0}");
}
