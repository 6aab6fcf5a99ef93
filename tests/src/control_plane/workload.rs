//! A scalable workload for the HPA scenarios: a Deployment whose pods request CPU, and an
//! `autoscaling/v2` HorizontalPodAutoscaler on its CPU utilization, as users write them.

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

/// Creates Deployment `name` (label `app=<name>`, one container `app` requesting
/// `cpu_request_milli`).
pub async fn create_deployment(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    replicas: i32,
    cpu_request_milli: u64,
) -> anyhow::Result<()> {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "app",
                        "image": "registry.invalid/kubepulse-sim:0",
                        "resources": {"requests": {
                            "cpu": format!("{cpu_request_milli}m"), "memory": "64Mi",
                        }},
                    }],
                },
            },
        },
    }))?;
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .with_context(|| format!("create deployment {namespace}/{name}"))?;
    Ok(())
}

/// Creates an HPA for Deployment `name` on average CPU utilization `target_percent`, with no
/// stabilization window either way (the controller acts on every sync).
pub async fn create_hpa(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    min: i32,
    max: i32,
    target_percent: i32,
) -> anyhow::Result<()> {
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min,
            "maxReplicas": max,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": target_percent},
            }}],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0},
                "scaleDown": {"stabilizationWindowSeconds": 0},
            },
        },
    }))?;
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &hpa)
        .await
        .with_context(|| format!("create HPA {namespace}/{name}"))?;
    Ok(())
}

/// What the HPA reports and what the Deployment asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scaling {
    /// Deployment `spec.replicas`.
    pub deployment_replicas: i32,
    /// HPA `status.desiredReplicas`.
    pub desired: i32,
    /// HPA `status.currentMetrics[cpu].current.averageUtilization`.
    pub utilization: Option<i32>,
    /// HPA conditions as `Type=Status(Reason)`, for messages.
    pub conditions: Vec<String>,
}

/// Reads [`Scaling`] for Deployment and HPA `name`.
pub async fn scaling(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Scaling> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("get deployment {namespace}/{name}"))?;
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("get HPA {namespace}/{name}"))?;
    let status = hpa.status.unwrap_or_default();
    let utilization = status
        .current_metrics
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.resource)
        .find(|r| r.name == "cpu")
        .and_then(|r| r.current.average_utilization);
    let conditions = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            format!(
                "{}={}({}: {})",
                c.type_,
                c.status,
                c.reason.unwrap_or_default(),
                c.message.unwrap_or_default()
            )
        })
        .collect();
    Ok(Scaling {
        deployment_replicas: deployment.spec.and_then(|s| s.replicas).unwrap_or_default(),
        desired: status.desired_replicas,
        utilization,
        conditions,
    })
}

/// Deletes the HPA and the Deployment (best effort; without a garbage collector the
/// ReplicaSet and pods stay, which is harmless in a per-test namespace).
pub async fn delete(client: &kube::Client, namespace: &str, name: &str) {
    let _ = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
        .delete(name, &DeleteParams::default())
        .await;
    let _ = Api::<Deployment>::namespaced(client.clone(), namespace)
        .delete(name, &DeleteParams::default())
        .await;
}
