//! Throwaway certificates made at run time (no private key is ever committed): a CA and leaf
//! certificates signed by it, for the simulated kubelets (named after their node, as real
//! kubelet serving certificates are) and the aggregators.

use std::path::Path;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority that signs leaf certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A PEM certificate and key.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
}

impl Ca {
    /// A new CA with the given common name.
    pub fn new(common_name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().context("generate CA key")?;
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, key).context("self-sign CA")?,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A serving certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> anyhow::Result<Leaf> {
        self.leaf(
            names,
            names.first().copied().unwrap_or("server"),
            &[],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with common name `cn` and organizations (groups) `orgs`.
    pub fn client(&self, cn: &str, orgs: &[&str]) -> anyhow::Result<Leaf> {
        self.leaf(&[], cn, orgs, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(
        &self,
        names: &[&str],
        cn: &str,
        orgs: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<Leaf> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        for org in orgs {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *org);
        }
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().context("generate key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("sign certificate")?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Leaf {
    /// Writes `<stem>.crt` and `<stem>.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("{stem}.crt")), &self.cert_pem)?;
        std::fs::write(dir.join(format!("{stem}.key")), &self.key_pem)?;
        Ok(())
    }
}
