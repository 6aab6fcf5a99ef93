//! Validated names: a node, a pod (namespace + name) and a container.
//!
//! Kubernetes object names are at most 253 bytes and never contain control characters or
//! `/`; we check exactly what can hurt us downstream (empty names, absurd lengths, bytes that
//! would corrupt a path or a log line), not the full DNS grammar.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use arcstr::{ArcStr, Substr};

/// Longest name we accept (the Kubernetes limit for object names).
pub const MAX_NAME_LEN: usize = 253;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The name is empty.
    #[error("{kind} name is empty")]
    Empty {
        /// what kind of name
        kind: &'static str,
    },
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("{kind} name is {len} bytes long, more than {MAX_NAME_LEN}")]
    TooLong {
        /// what kind of name
        kind: &'static str,
        /// its length
        len: usize,
    },
    /// The name contains a byte that no Kubernetes name contains.
    #[error("{kind} name {name:?} contains an invalid character")]
    InvalidChar {
        /// what kind of name
        kind: &'static str,
        /// the name (lossy, for the message)
        name: String,
    },
}

fn validate(kind: &'static str, name: &str) -> Result<(), KeyError> {
    if name.is_empty() {
        return Err(KeyError::Empty { kind });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(KeyError::TooLong {
            kind,
            len: name.len(),
        });
    }
    if name
        .bytes()
        .any(|b| b.is_ascii_control() || b == b'/' || b == b' ' || b == b'"' || b == b'\\')
    {
        return Err(KeyError::InvalidChar {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $text:ident, $same:path) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty($text);

        impl $ty {
            /// Validates and wraps a name.
            pub fn new(name: &str) -> Result<Self, KeyError> {
                validate($kind, name)?;
                Ok(Self(ArcStr::from(name).into()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// True when both hold the very same text (not only equal text): a cheap test
            /// that is often true for names shared through [`Names`] or cloned from one
            /// another. False says nothing; compare with `==` then.
            pub fn same(&self, other: &Self) -> bool {
                $same(&self.0, &other.0)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A node name, as in `metadata.name` of a Node.
    ///
    /// One pointer wide: the text is shared and its length is stored with it.
    NodeName,
    "node",
    ArcStr,
    ArcStr::ptr_eq
);
name_type!(
    /// A container name, as in the kubelet's `container` label.
    ///
    /// One pointer wide: the text is shared and its length is stored with it.
    ContainerName,
    "container",
    ArcStr,
    ArcStr::ptr_eq
);
name_type!(
    /// A namespace name.
    ///
    /// One pointer wide: the text is shared and its length is stored with it.
    Namespace,
    "namespace",
    ArcStr,
    ArcStr::ptr_eq
);
name_type!(
    /// A pod name (without its namespace).
    ///
    /// Two pointers wide: a range of a shared text, so that the names of every pod a snapshot
    /// defines can share one allocation ([`Names::pods`]) instead of one each, with its own
    /// header and rounding (a pod name is the one name no other node repeats).
    PodName,
    "pod",
    Substr,
    Substr::shallow_eq
);

/// A pod, keyed like the kubelet and the Metrics API key it: namespace and name (no UID).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PodKey {
    /// The pod's namespace.
    pub namespace: Namespace,
    /// The pod's name.
    pub name: PodName,
}

impl PodKey {
    /// True when both parts hold the very same texts (see [`NodeName::same`]).
    pub fn same(&self, other: &Self) -> bool {
        self.namespace.same(&other.namespace) && self.name.same(&other.name)
    }

    /// Validates both parts.
    pub fn new(namespace: &str, name: &str) -> Result<Self, KeyError> {
        Ok(Self {
            namespace: Namespace::new(namespace)?,
            name: PodName::new(name)?,
        })
    }
}

/// Shares the text of names that many nodes repeat — namespaces and container names — so a
/// store of many nodes holds each once rather than once per pod.
///
/// Thread-safe (a short lock per new name; names are defined once per stream, not per
/// sample). Bounded: names no one else holds any more are dropped whenever the set has
/// doubled since the last sweep, so it holds at most about twice the names in use.
#[derive(Debug, Default)]
pub struct Names(Mutex<NameSet>);

#[derive(Debug, Default)]
struct NameSet {
    names: HashSet<ArcStr>,
    /// Sweep when the set reaches this size.
    sweep_at: usize,
}

/// The set never sweeps below this many names.
const MIN_SWEEP: usize = 1024;

impl Names {
    /// Validates a namespace name and shares its text.
    pub fn namespace(&self, name: &str) -> Result<Namespace, KeyError> {
        validate("namespace", name)?;
        Ok(Namespace(self.intern(name)))
    }

    /// Validates a container name and shares its text.
    pub fn container(&self, name: &str) -> Result<ContainerName, KeyError> {
        validate("container", name)?;
        Ok(ContainerName(self.intern(name)))
    }

    /// A pod key whose namespace text is shared (pod names are unique: not shared).
    pub fn pod(&self, namespace: &str, name: &str) -> Result<PodKey, KeyError> {
        Ok(PodKey {
            namespace: self.namespace(namespace)?,
            name: PodName::new(name)?,
        })
    }

    /// Pod keys for (namespace, name) pairs, in order, as [`Names::pod`] makes them, except that
    /// the pod names' texts are ranges of one allocation: the names a snapshot defines cost their
    /// bytes and one header, not a header and a rounding each. The text lives as long as any of
    /// these names does: beyond its pods' names, a node keeps those of gone pods only while a pod
    /// defined in the same message as theirs remains. The first invalid name is the error. The
    /// names together must stay under 4 GiB (a snapshot is at most a gRPC message: 4 MiB).
    pub fn pods<'a>(
        &self,
        pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Result<Vec<PodKey>, KeyError> {
        let mut text = String::new();
        for (namespace, name) in pairs.clone() {
            validate("namespace", namespace)?;
            validate("pod", name)?;
            text.push_str(name);
        }
        let text = ArcStr::from(text);
        let mut at = 0;
        // every name is valid by now: only the namespaces' texts are left to share
        Ok(pairs
            .map(|(namespace, name)| {
                let range = at..at + name.len();
                at = range.end;
                PodKey {
                    namespace: Namespace(self.intern(namespace)),
                    name: PodName(text.substr(range)),
                }
            })
            .collect())
    }

    /// Number of names held (in use or not swept yet).
    pub fn len(&self) -> usize {
        self.lock().names.len()
    }

    /// True when no name is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NameSet> {
        // the set is consistent between statements: a panic elsewhere leaves it usable
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn intern(&self, name: &str) -> ArcStr {
        let mut set = self.lock();
        if let Some(held) = set.names.get(name) {
            return held.clone();
        }
        if set.names.len() >= set.sweep_at {
            set.names
                .retain(|n| ArcStr::strong_count(n).is_some_and(|count| count > 1));
            set.sweep_at = (set.names.len() * 2).max(MIN_SWEEP);
        }
        let text = ArcStr::from(name);
        set.names.insert(text.clone());
        text
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubernetes_names() {
        assert!(NodeName::new("kind-control-plane").is_ok());
        assert!(PodKey::new("kube-system", "coredns-5dd5756b68-abcde").is_ok());
        assert_eq!(PodKey::new("a", "b").unwrap().to_string(), "a/b");
    }

    #[test]
    fn names_share_text_and_forget_unused_names() {
        let names = Names::default();
        let a = names.pod("kube-system", "a").unwrap();
        let b = names.pod("kube-system", "b").unwrap();
        assert!(a.namespace.same(&b.namespace));
        assert_eq!(a, PodKey::new("kube-system", "a").unwrap());
        let c = names.container("app").unwrap();
        assert!(c.same(&names.container("app").unwrap()));
        assert_eq!(names.len(), 2);
        // the same checks as the plain constructors
        assert_eq!(
            names.namespace(""),
            Err(KeyError::Empty { kind: "namespace" })
        );
        assert!(matches!(
            names.container("a b"),
            Err(KeyError::InvalidChar {
                kind: "container",
                ..
            })
        ));
        assert!(matches!(
            names.pod("ns", "a/b"),
            Err(KeyError::InvalidChar { kind: "pod", .. })
        ));
        // names nobody holds are swept once the set has doubled
        drop((a, b, c));
        for i in 0..3 * MIN_SWEEP {
            names.container(&format!("c{i}")).unwrap();
        }
        assert!(names.len() <= MIN_SWEEP + 1, "{} names held", names.len());
        let kept = names.namespace("kept").unwrap();
        for i in 0..3 * MIN_SWEEP {
            names.container(&format!("d{i}")).unwrap();
        }
        assert!(kept.same(&names.namespace("kept").unwrap()));
    }

    #[test]
    fn names_are_one_pointer_wide_but_pod_names() {
        // a store holds several names per pod: their width is most of its per-pod memory
        assert_eq!(size_of::<NodeName>(), size_of::<usize>());
        assert_eq!(size_of::<PodKey>(), 3 * size_of::<usize>());
        assert_eq!(size_of::<Option<ContainerName>>(), size_of::<usize>());
    }

    #[test]
    fn pods_share_one_text_and_compare_as_separate_names() {
        let names = Names::default();
        let pairs = [("a", "web-0"), ("b", "web-1"), ("a", "db-0")];
        let keys = names.pods(pairs.iter().copied()).unwrap();
        for ((ns, name), key) in pairs.iter().zip(&keys) {
            assert_eq!(*key, PodKey::new(ns, name).unwrap());
            assert_eq!(key.name.as_str(), *name);
        }
        assert!(keys[0].namespace.same(&keys[2].namespace));
        assert!(keys[0].name.same(&keys[0].name.clone()));
        assert!(!keys[0].name.same(&keys[1].name));
        assert!(keys[2] < keys[0], "ordered by text: db-0 before web-0");
        // the first invalid name is the error, whatever follows
        assert!(matches!(
            names.pods([("a", "ok"), ("a", "x/y"), ("", "z")].into_iter()),
            Err(KeyError::InvalidChar { kind: "pod", .. })
        ));
        assert_eq!(
            names.pods([("a", "ok"), ("", "x/y")].into_iter()),
            Err(KeyError::Empty { kind: "namespace" })
        );
        assert_eq!(names.pods(std::iter::empty()).unwrap(), []);
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(NodeName::new(""), Err(KeyError::Empty { kind: "node" }));
        assert!(matches!(
            NodeName::new(&"x".repeat(254)),
            Err(KeyError::TooLong { len: 254, .. })
        ));
        assert!(matches!(
            PodKey::new("ns", "a/b"),
            Err(KeyError::InvalidChar { kind: "pod", .. })
        ));
        assert!(matches!(
            ContainerName::new("a\nb"),
            Err(KeyError::InvalidChar { .. })
        ));
    }
}
