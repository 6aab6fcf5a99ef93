//! The authorizer: a SubjectAccessReview (`authorization.k8s.io/v1`) per distinct user and
//! request attributes, with allowed and denied answers cached for their own TTLs
//! (`--authorization-webhook-cache-authorized-ttl` / `-unauthorized-ttl`). Failed calls are
//! not cached and answer 500, as the apiserver's authorization filter does.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};
use kubepulse_aggregator_core::authz::{Attributes, UserInfo};

use super::cache::TtlCache;
use super::{Authorizer, Decision};

/// SubjectAccessReviews through `client`.
pub struct SubjectAccessReviewer {
    client: Client,
    allowed_ttl: Duration,
    denied_ttl: Duration,
    cache: TtlCache<(UserInfo, Attributes), Decision>,
}

impl SubjectAccessReviewer {
    /// A reviewer caching allowed answers for `allowed_ttl` and denials for `denied_ttl`.
    pub fn new(client: Client, allowed_ttl: Duration, denied_ttl: Duration) -> Self {
        Self {
            client,
            allowed_ttl,
            denied_ttl,
            cache: TtlCache::new(),
        }
    }
}

impl Authorizer for SubjectAccessReviewer {
    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        attrs: &'a Attributes,
    ) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let key = (user.clone(), attrs.clone());
            if let Some(decision) = self.cache.get(&key, Instant::now()) {
                return decision;
            }
            let review = review(user, attrs);
            let decision = match Api::<SubjectAccessReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
            {
                Ok(answer) => {
                    let status = answer.status.unwrap_or_default();
                    if let Some(err) = status.evaluation_error.filter(|e| !e.is_empty()) {
                        tracing::debug!(error = err, "SubjectAccessReview evaluation error");
                    }
                    if status.allowed {
                        Decision::Allow
                    } else {
                        Decision::Deny(status.reason.unwrap_or_default())
                    }
                }
                Err(err) => return Decision::Error(format!("SubjectAccessReview failed: {err}")),
            };
            let ttl = match decision {
                Decision::Allow => self.allowed_ttl,
                _ => self.denied_ttl,
            };
            self.cache
                .insert(key, decision.clone(), ttl, Instant::now());
            decision
        })
    }
}

/// The review of `user` doing `attrs`.
pub fn review(user: &UserInfo, attrs: &Attributes) -> SubjectAccessReview {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let (resource_attributes, non_resource_attributes) = match attrs {
        Attributes::Resource {
            verb,
            group,
            version,
            resource,
            subresource,
            namespace,
            name,
        } => (
            Some(ResourceAttributes {
                verb: some(verb),
                group: Some(group.clone()),
                version: some(version),
                resource: some(resource),
                subresource: some(subresource),
                namespace: some(namespace),
                name: some(name),
                ..ResourceAttributes::default()
            }),
            None,
        ),
        Attributes::NonResource { verb, path } => (
            None,
            Some(NonResourceAttributes {
                verb: some(verb),
                path: some(path),
            }),
        ),
    };
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: some(&user.name),
            uid: some(&user.uid),
            groups: (!user.groups.is_empty()).then(|| user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            resource_attributes,
            non_resource_attributes,
        },
        ..SubjectAccessReview::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviews_carry_the_user_and_the_attributes() {
        let user = UserInfo {
            name: "jane".into(),
            groups: vec!["devs".into(), "system:authenticated".into()],
            ..UserInfo::default()
        };
        let attrs = Attributes::Resource {
            verb: "list".into(),
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            resource: "pods".into(),
            subresource: String::new(),
            namespace: "prod".into(),
            name: String::new(),
        };
        let json = serde_json::to_value(review(&user, &attrs)).unwrap();
        assert_eq!(
            json["spec"],
            serde_json::json!({
                "user": "jane",
                "groups": ["devs", "system:authenticated"],
                "resourceAttributes": {
                    "verb": "list", "group": "metrics.k8s.io", "version": "v1beta1",
                    "resource": "pods", "namespace": "prod"
                }
            })
        );
        let path = Attributes::NonResource {
            verb: "get".into(),
            path: "/metrics".into(),
        };
        let json = serde_json::to_value(review(&user, &path)).unwrap();
        assert_eq!(
            json["spec"]["nonResourceAttributes"],
            serde_json::json!({"verb": "get", "path": "/metrics"})
        );
    }
}
