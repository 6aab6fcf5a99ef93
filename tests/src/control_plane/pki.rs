//! Every certificate and key a control plane needs, made at run time with [`crate::certs`]
//! (nothing private is ever committed):
//!
//! | file | what |
//! |---|---|
//! | `ca.crt` | cluster CA: kube-apiserver's `--client-ca-file`, trusted by kubeconfigs |
//! | `apiserver.crt/.key` | kube-apiserver serving, SAN `127.0.0.1`, `localhost` |
//! | `admin.crt/.key` | client `CN=admin, O=system:masters` (kubectl, KCM, the aggregator) |
//! | `front-proxy-ca.crt` | `--requestheader-client-ca-file` |
//! | `front-proxy-client.crt/.key` | `CN=front-proxy-client`: how kube-apiserver proxies to kubepulse |
//! | `sa.key`, `sa.pub` | service-account token signing pair: ECDSA P-256 (ring cannot generate RSA; kube-apiserver accepts ES256) |
//! | `kubepulse.crt/.key` | the aggregator's serving certificate for `<service>.<namespace>.svc` (chain: leaf + cluster CA) |

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::certs::Ca;

/// Paths of the generated files.
#[derive(Clone, Debug)]
pub struct Pki {
    /// Folder holding everything.
    pub dir: PathBuf,
}

impl Pki {
    /// Generates every file into `dir`; `service_host` is `<service>.<namespace>.svc` of the
    /// kubepulse Service (kube-apiserver verifies the aggregator against that name).
    pub fn generate(dir: &Path, service_host: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ca = Ca::new("kubepulse-test-cluster-ca")?;
        std::fs::write(dir.join("ca.crt"), ca.cert_pem())?;
        ca.server(&["127.0.0.1", "localhost"])?
            .write(dir, "apiserver")?;
        ca.client("admin", &["system:masters"])?
            .write(dir, "admin")?;
        let front = Ca::new("kubepulse-test-front-proxy-ca")?;
        std::fs::write(dir.join("front-proxy-ca.crt"), front.cert_pem())?;
        front
            .client("front-proxy-client", &[])?
            .write(dir, "front-proxy-client")?;
        let sa = rcgen::KeyPair::generate().context("generate the service-account key")?;
        std::fs::write(dir.join("sa.key"), sa.serialize_pem())?;
        std::fs::write(dir.join("sa.pub"), sa.public_key_pem())?;
        let mut serving = ca.server(&[service_host, "localhost", "127.0.0.1"])?;
        serving.cert_pem.push_str(&ca.cert_pem());
        serving.write(dir, "kubepulse")?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// `dir/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `--name=dir/file` for a command line.
    pub fn flag(&self, name: &str, file: &str) -> String {
        format!("--{name}={}", self.path(file).display())
    }

    /// The cluster CA, PEM (an APIService `caBundle`).
    pub fn ca_pem(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(self.path("ca.crt")).context("read ca.crt")
    }
}
