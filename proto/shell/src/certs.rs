//! Serving certificates signed by a CA, for the Service names a binary is reached by: the
//! aggregator signs its own with the bootstrap CA, the relay with the same CA (so agents verify
//! it with the bundle they already mount).

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};

/// Certificates are valid from this long before they are issued (clock skew between nodes).
pub const BACKDATE: Duration = Duration::from_secs(3600);
/// Lifetime of a serving certificate (a new one is issued at every start).
pub const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// PEM certificate chain and key.
#[derive(Clone)]
pub struct CertKey {
    /// Certificate chain, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
}

/// `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc` and `<svc>.<ns>.svc.<domain>` for every Service.
pub fn serving_names(services: &[String], namespace: &str, cluster_domain: &str) -> Vec<String> {
    let domain = cluster_domain.trim_matches('.');
    let mut names = Vec::with_capacity(services.len() * 4);
    for svc in services {
        for name in [
            svc.clone(),
            format!("{svc}.{namespace}"),
            format!("{svc}.{namespace}.svc"),
            format!("{svc}.{namespace}.svc.{domain}"),
        ] {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// A serving certificate for `names`, signed by the CA (`ca_cert_pem`, `ca_key_pem`), valid
/// from `now -` [`BACKDATE`] for [`SERVING_VALIDITY`]; the chain is the leaf, then the CA
/// (clients trust the CA; sending it costs one certificate).
pub fn issue_serving(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    names: &[String],
    now: SystemTime,
) -> anyhow::Result<CertKey> {
    let ca_key = KeyPair::from_pem(ca_key_pem).context("parse CA key")?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).context("parse CA certificate")?;
    let key = KeyPair::generate().context("generate serving key")?;
    let mut params = CertificateParams::new(names.to_vec()).context("serving names")?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + SERVING_VALIDITY).into();
    let cert = params
        .signed_by(&key, &issuer)
        .context("sign serving certificate")?;
    Ok(CertKey {
        cert_pem: format!("{}{}", cert.pem(), ca_cert_pem),
        key_pem: key.serialize_pem(),
    })
}
