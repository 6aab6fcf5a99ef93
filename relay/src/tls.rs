//! The relay's serving certificate for agents: the configured pair (`--tls-cert-file`), one
//! signed in memory with the aggregators' serving CA for the relay's Service names
//! (`--serving-ca-file`, so agents verify the relay with the CA bundle they already mount), or
//! a self-signed one for `localhost` (local runs; agents cannot verify it without that
//! certificate). The signing is the aggregator's ([`kubepulse_shell::certs`]).

use std::time::SystemTime;

use anyhow::Context as _;

use crate::Config;

pub use kubepulse_shell::certs::CertKey;

/// The serving pair as configured (`None` with `--grpc-plaintext`).
pub fn serving_pair(config: &Config, now: SystemTime) -> anyhow::Result<Option<CertKey>> {
    if config.grpc_plaintext {
        return Ok(None);
    }
    let read = |path: &std::path::Path, flag: &str| {
        std::fs::read_to_string(path).with_context(|| format!("read {flag} {}", path.display()))
    };
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_private_key_file) {
        return Ok(Some(CertKey {
            cert_pem: read(cert, "--tls-cert-file")?,
            key_pem: read(key, "--tls-private-key-file")?,
        }));
    }
    if let (Some(ca_cert), Some(ca_key)) = (&config.serving_ca_file, &config.serving_ca_key_file) {
        let names = serving_names(
            &config.service_names,
            &config.namespace,
            &config.cluster_domain,
        );
        let pair = sign(
            &read(ca_cert, "--serving-ca-file")?,
            &read(ca_key, "--serving-ca-key-file")?,
            &names,
            now,
        )?;
        tracing::info!(names = ?names, "serving certificate signed with --serving-ca-file");
        return Ok(Some(pair));
    }
    tracing::warn!(
        "no --tls-cert-file or --serving-ca-file: serving a self-signed certificate for localhost, which agents cannot verify"
    );
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .context("generate certificate")?;
    Ok(Some(CertKey {
        cert_pem: generated.cert.pem(),
        key_pem: generated.signing_key.serialize_pem(),
    }))
}

/// The names of every non-empty `--service-names` entry ([`kubepulse_shell::certs::serving_names`]).
pub fn serving_names(services: &[String], namespace: &str, cluster_domain: &str) -> Vec<String> {
    let services: Vec<String> = services.iter().filter(|s| !s.is_empty()).cloned().collect();
    kubepulse_shell::certs::serving_names(&services, namespace, cluster_domain)
}

/// A serving certificate for `names` signed by the CA, chain = leaf then CA.
fn sign(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    names: &[String],
    now: SystemTime,
) -> anyhow::Result<CertKey> {
    kubepulse_shell::certs::issue_serving(ca_cert_pem, ca_key_pem, names, now)
        .context("--serving-ca-file / --serving-ca-key-file")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, KeyUsagePurpose};

    #[test]
    fn names_cover_every_form_of_the_service() {
        assert_eq!(
            serving_names(&["kubepulse-relay".into()], "kube-system", "cluster.local."),
            [
                "kubepulse-relay",
                "kubepulse-relay.kube-system",
                "kubepulse-relay.kube-system.svc",
                "kubepulse-relay.kube-system.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn a_certificate_is_signed_by_the_given_ca() {
        let now = SystemTime::now();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca = params.self_signed(&ca_key).unwrap();
        let pair = sign(
            &ca.pem(),
            &ca_key.serialize_pem(),
            &["kubepulse-relay".into()],
            now,
        )
        .unwrap();
        assert!(
            pair.cert_pem.ends_with(&ca.pem()),
            "the chain ends with the CA"
        );
        assert!(pair.cert_pem.matches("BEGIN CERTIFICATE").count() == 2);
        assert!(sign(&ca.pem(), "not a key", &[], now).is_err());
    }
}
