//! Discovery documents for `metrics.k8s.io`: the legacy `APIGroupList` (`/apis`), `APIGroup`
//! (`/apis/metrics.k8s.io`) and `APIResourceList` (`/apis/metrics.k8s.io/<version>`), and the
//! aggregated `apidiscovery.k8s.io/v2` `APIGroupDiscoveryList` kube-apiserver asks for first.
//! Both versions are listed, `v1beta1` first (preferred, what current clients use).

use super::json::{push_str, write_type_meta};
use crate::api::ApiVersion;

/// Content type of the aggregated discovery document.
pub(crate) const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

const GROUP: &str = "metrics.k8s.io";

/// The two resources: (resource, kind, namespaced).
const RESOURCES: [(&str, &str, bool); 2] = [
    ("nodes", "NodeMetrics", false),
    ("pods", "PodMetrics", true),
];

pub(crate) fn api_group_list() -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_type_meta(&mut out, "APIGroupList", "v1");
    out.extend_from_slice(b"\"groups\":[{");
    write_group_fields(&mut out);
    out.extend_from_slice(b"}]}\n");
    out
}

pub(crate) fn api_group() -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_type_meta(&mut out, "APIGroup", "v1");
    write_group_fields(&mut out);
    out.extend_from_slice(b"}\n");
    out
}

pub(crate) fn api_resource_list(v: ApiVersion) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_type_meta(&mut out, "APIResourceList", "v1");
    out.extend_from_slice(b"\"groupVersion\":");
    push_str(&mut out, v.group_version());
    out.extend_from_slice(b",\"resources\":[");
    for (i, (resource, kind, namespaced)) in RESOURCES.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        push_str(&mut out, resource);
        // metrics-server returns "" on purpose: `singularName` is required but unset.
        out.extend_from_slice(b",\"singularName\":\"\",\"namespaced\":");
        out.extend_from_slice(if *namespaced { b"true" } else { b"false" });
        out.extend_from_slice(b",\"kind\":");
        push_str(&mut out, kind);
        out.extend_from_slice(b",\"verbs\":[\"get\",\"list\"]}");
    }
    out.extend_from_slice(b"]}\n");
    out
}

pub(crate) fn aggregated_discovery() -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_type_meta(&mut out, "APIGroupDiscoveryList", "apidiscovery.k8s.io/v2");
    out.extend_from_slice(b"\"metadata\":{},\"items\":[{\"metadata\":{\"name\":");
    push_str(&mut out, GROUP);
    out.extend_from_slice(b"},\"versions\":[");
    for (i, v) in ApiVersion::ALL.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"version\":");
        push_str(&mut out, v.as_str());
        out.extend_from_slice(b",\"resources\":[");
        for (j, (resource, kind, namespaced)) in RESOURCES.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"resource\":");
            push_str(&mut out, resource);
            out.extend_from_slice(b",\"responseKind\":{\"group\":");
            push_str(&mut out, GROUP);
            out.extend_from_slice(b",\"version\":");
            push_str(&mut out, v.as_str());
            out.extend_from_slice(b",\"kind\":");
            push_str(&mut out, kind);
            out.extend_from_slice(b"},\"scope\":");
            push_str(&mut out, if *namespaced { "Namespaced" } else { "Cluster" });
            out.extend_from_slice(b",\"singularResource\":\"\",\"verbs\":[\"get\",\"list\"]}");
        }
        out.extend_from_slice(b"],\"freshness\":\"Current\"}");
    }
    out.extend_from_slice(b"]}]}\n");
    out
}

// === private helpers ===

/// `"name":…,"versions":[…],"preferredVersion":{…}` of the `metrics.k8s.io` APIGroup.
fn write_group_fields(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\"name\":");
    push_str(out, GROUP);
    out.extend_from_slice(b",\"versions\":[");
    for (i, v) in ApiVersion::ALL.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_group_version(out, *v);
    }
    out.extend_from_slice(b"],\"preferredVersion\":");
    write_group_version(out, ApiVersion::ALL[0]);
}

fn write_group_version(out: &mut Vec<u8>, v: ApiVersion) {
    out.extend_from_slice(b"{\"groupVersion\":");
    push_str(out, v.group_version());
    out.extend_from_slice(b",\"version\":");
    push_str(out, v.as_str());
    out.push(b'}');
}
