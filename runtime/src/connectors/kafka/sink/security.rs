//! How the recovery client (protocol.rs) reaches the brokers: from the same `security.protocol`,
//! SASL and TLS properties librdkafka is given, so exactly-once works wherever the producer
//! does. Reading the properties is pure and runs at spec validation; the TLS setup reads the
//! PEM files when the sink opens.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::scram::Hash;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(Hash),
}

impl Mechanism {
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(Hash::Sha256) => "SCRAM-SHA-256",
            Mechanism::Scram(Hash::Sha512) => "SCRAM-SHA-512",
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Sasl {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// Trusted CAs; the system's when absent.
    pub ca: Option<Pem>,
    /// Client certificate and key (mutual TLS).
    pub client: Option<(Pem, Pem)>,
    /// `enable.ssl.certificate.verification`.
    pub verify_chain: bool,
    /// `ssl.endpoint.identification.algorithm: https` (librdkafka's default).
    pub verify_name: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    pub tls: Option<Tls>,
    pub sasl: Option<Sasl>,
}

/// A property that cannot be used, and why; the caller names it as `properties.<name>`.
pub type PropertyError = (String, String);

fn bool_property(
    p: &BTreeMap<String, String>,
    name: &str,
    default: bool,
) -> Result<bool, PropertyError> {
    match p.get(name).map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(v) => Err((name.into(), format!("expected true or false, got {v:?}"))),
    }
}

impl Security {
    pub fn from_properties(p: &BTreeMap<String, String>) -> Result<Security, PropertyError> {
        let protocol = p
            .get("security.protocol")
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_else(|| "plaintext".into());
        let (tls, sasl) = match protocol.as_str() {
            "plaintext" => (false, false),
            "ssl" => (true, false),
            "sasl_plaintext" => (false, true),
            "sasl_ssl" => (true, true),
            other => {
                return Err((
                    "security.protocol".into(),
                    format!(
                        "unknown protocol {other:?} (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
                    ),
                ))
            }
        };
        let tls = if tls { Some(Self::tls(p)?) } else { None };
        let sasl = if sasl { Some(Self::sasl(p)?) } else { None };
        Ok(Security { tls, sasl })
    }

    fn sasl(p: &BTreeMap<String, String>) -> Result<Sasl, PropertyError> {
        let (key, mechanism) = match (p.get("sasl.mechanism"), p.get("sasl.mechanisms")) {
            (Some(m), _) => ("sasl.mechanism", m.as_str()),
            (None, Some(m)) => ("sasl.mechanisms", m.as_str()),
            // librdkafka's default.
            (None, None) => ("sasl.mechanism", "GSSAPI"),
        };
        let mechanism = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => Mechanism::Plain,
            "SCRAM-SHA-256" => Mechanism::Scram(Hash::Sha256),
            "SCRAM-SHA-512" => Mechanism::Scram(Hash::Sha512),
            other => {
                return Err((
                    key.into(),
                    format!("exactly-once supports PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (its recovery client authenticates itself), not {other}; use at-least-once"),
                ))
            }
        };
        let get = |name: &str| {
            p.get(name).cloned().ok_or_else(|| {
                (
                    name.to_string(),
                    format!("is required for {}", mechanism.name()),
                )
            })
        };
        Ok(Sasl {
            username: get("sasl.username")?,
            password: get("sasl.password")?,
            mechanism,
        })
    }

    fn tls(p: &BTreeMap<String, String>) -> Result<Tls, PropertyError> {
        for unsupported in [
            "ssl.keystore.location",
            "ssl.key.password",
            "ssl.engine.location",
        ] {
            if p.contains_key(unsupported) {
                return Err((
                    unsupported.into(),
                    "is not supported with exactly-once; give PEM files in ssl.certificate.location and an unencrypted ssl.key.location".into(),
                ));
            }
        }
        let pem = |file: &str, inline: &str| match (p.get(file), p.get(inline)) {
            (Some(f), _) => Some(Pem::File(PathBuf::from(f))),
            (None, Some(t)) => Some(Pem::Inline(t.clone())),
            (None, None) => None,
        };
        let ca = match p.get("ssl.ca.location").map(String::as_str) {
            Some("probe") => None,
            _ => pem("ssl.ca.location", "ssl.ca.pem"),
        };
        let client = match (
            pem("ssl.certificate.location", "ssl.certificate.pem"),
            pem("ssl.key.location", "ssl.key.pem"),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err((
                    "ssl.key.location".into(),
                    "is required with ssl.certificate.location".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "ssl.certificate.location".into(),
                    "is required with ssl.key.location".into(),
                ))
            }
        };
        let verify_name = match p
            .get("ssl.endpoint.identification.algorithm")
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("https") => true,
            Some("none") => false,
            Some(other) => {
                return Err((
                    "ssl.endpoint.identification.algorithm".into(),
                    format!("expected https or none, got {other:?}"),
                ))
            }
        };
        Ok(Tls {
            ca,
            client,
            verify_chain: bool_property(p, "enable.ssl.certificate.verification", true)?,
            verify_name,
        })
    }
}

fn pem_bytes(pem: &Pem) -> Result<Vec<u8>, String> {
    match pem {
        Pem::File(path) => {
            std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
        }
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
    }
}

fn describe(pem: &Pem) -> String {
    match pem {
        Pem::File(p) => p.display().to_string(),
        Pem::Inline(_) => "the inline PEM".into(),
    }
}

/// What a connection needs: the SASL login and, for TLS, the ready client configuration.
#[derive(Clone, Default)]
pub struct Transport {
    pub sasl: Option<Sasl>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Transport {
    /// Reads the TLS files; an error names the file.
    pub fn new(security: &Security) -> Result<Transport, String> {
        Ok(Transport {
            sasl: security.sasl.clone(),
            tls: security.tls.as_ref().map(client_config).transpose()?,
        })
    }
}

/// The rustls client configuration for `tls` (reads its files).
pub fn client_config(tls: &Tls) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = crate::tls::crypto_provider();
    let mut roots = RootCertStore::empty();
    match &tls.ca {
        Some(ca) => {
            let bytes = pem_bytes(ca)?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", describe(ca)))?;
            if certs.is_empty() {
                return Err(format!("{}: no certificate in it", describe(ca)));
            }
            for c in certs {
                roots.add(c).map_err(|e| format!("{}: {e}", describe(ca)))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("TLS trust store: {e}"))?;
    let verifier = Arc::new(Verifier {
        inner,
        provider: provider.clone(),
        verify_chain: tls.verify_chain,
        verify_name: tls.verify_name,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &tls.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(&pem_bytes(cert)?)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{}: {e}", describe(cert)))?;
            let key = PrivateKeyDer::from_pem_slice(&pem_bytes(key)?)
                .map_err(|e| format!("{}: {e}", describe(key)))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("TLS client certificate: {e}"))?
        }
    };
    Ok(Arc::new(config))
}

/// WebPKI verification, with the two checks librdkafka lets users turn off.
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    verify_chain: bool,
    verify_name: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.verify_chain {
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.verify_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn protocols_mechanisms_and_tls_settings_are_read_like_librdkafka() {
        assert_eq!(
            Security::from_properties(&props(&[])).unwrap(),
            Security::default()
        );
        let s = Security::from_properties(&props(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "scram-sha-512"),
            ("sasl.username", "u"),
            ("sasl.password", "hunter2"),
            ("ssl.ca.location", "/ca.pem"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ]))
        .unwrap();
        let sasl = s.sasl.unwrap();
        assert_eq!(sasl.mechanism, Mechanism::Scram(Hash::Sha512));
        assert!(!format!("{sasl:?}").contains("hunter2"));
        let tls = s.tls.unwrap();
        assert_eq!(tls.ca, Some(Pem::File("/ca.pem".into())));
        assert!(tls.verify_chain && !tls.verify_name);
        let plain = Security::from_properties(&props(&[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ]))
        .unwrap();
        assert!(plain.tls.is_none() && plain.sasl.unwrap().mechanism == Mechanism::Plain);
    }

    #[test]
    fn what_the_recovery_client_cannot_do_names_the_property() {
        let e = |kv: &[(&str, &str)]| Security::from_properties(&props(kv)).unwrap_err();
        assert_eq!(e(&[("security.protocol", "SASL_SSL")]).0, "sasl.mechanism");
        assert!(e(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "OAUTHBEARER")
        ])
        .1
        .contains("OAUTHBEARER"));
        assert_eq!(
            e(&[
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "u")
            ])
            .0,
            "sasl.password"
        );
        assert_eq!(
            e(&[
                ("security.protocol", "SSL"),
                ("ssl.keystore.location", "/k.p12")
            ])
            .0,
            "ssl.keystore.location"
        );
        assert_eq!(
            e(&[
                ("security.protocol", "SSL"),
                ("ssl.certificate.location", "/c.pem")
            ])
            .0,
            "ssl.key.location"
        );
        assert_eq!(
            e(&[
                ("security.protocol", "SSL"),
                ("enable.ssl.certificate.verification", "maybe")
            ])
            .0,
            "enable.ssl.certificate.verification"
        );
        assert_eq!(e(&[("security.protocol", "TLS")]).0, "security.protocol");
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let tls = Tls {
            ca: Some(Pem::File("/nonexistent/ca.pem".into())),
            client: None,
            verify_chain: true,
            verify_name: true,
        };
        assert!(client_config(&tls)
            .unwrap_err()
            .contains("/nonexistent/ca.pem"));
        let empty = Tls {
            ca: Some(Pem::Inline("not a pem".into())),
            ..tls
        };
        assert!(client_config(&empty)
            .unwrap_err()
            .contains("no certificate"));
    }
}
