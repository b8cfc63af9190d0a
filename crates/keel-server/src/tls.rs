//! The server's own certificate authority and TLS certificate, made on first start.
//!
//! Agents pin the CA by its SHA-256 fingerprint, which travels inside the enrollment token, so
//! no certificate has to be trusted on first use.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

use crate::ServerError;

/// PEM files of the CA and the server certificate.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// CA certificate (PEM): what agents pin.
    pub ca_pem: String,
    /// Server certificate chain (PEM).
    pub cert_pem: String,
    /// Server private key (PEM).
    pub key_pem: String,
    /// SHA-256 of the CA certificate (DER), lowercase hex.
    pub ca_fingerprint: String,
}

/// Loads the TLS material from `dir`, creating a CA and a server certificate for `names` (DNS
/// names or IP addresses) the first time.
pub fn load_or_create(dir: &Path, names: &[String]) -> Result<TlsMaterial, ServerError> {
    let files = ["ca.pem", "ca.key", "server.pem", "server.key"].map(|f| dir.join(f));
    if files.iter().all(|f| f.exists()) {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| ServerError::io(p, e));
        let ca_pem = read(&files[0])?;
        return Ok(TlsMaterial {
            ca_fingerprint: fingerprint_pem(&ca_pem)?,
            ca_pem,
            cert_pem: read(&files[2])?,
            key_pem: read(&files[3])?,
        });
    }
    let gen = |e: rcgen::Error| ServerError::Tls(e.to_string());
    let ca_key = KeyPair::generate().map_err(gen)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "Keel server CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_after = rcgen::date_time_ymd(2099, 12, 31);
    let ca_cert = ca.self_signed(&ca_key).map_err(gen)?;

    let key = KeyPair::generate().map_err(gen)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Keel server");
    for n in names {
        params
            .subject_alt_names
            .push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into().map_err(gen)?),
            });
    }
    params.not_after = rcgen::date_time_ymd(2099, 12, 31);
    let issuer = Issuer::from_params(&ca, &ca_key);
    let cert = params.signed_by(&key, &issuer).map_err(gen)?;

    let m = TlsMaterial {
        ca_fingerprint: hex(&Sha256::digest(ca_cert.der())),
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    let write = |p: &Path, data: &str, mode: u32| -> Result<(), ServerError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(p)
            .map_err(|e| ServerError::io(p, e))?;
        f.write_all(data.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| ServerError::io(p, e))
    };
    write(&files[1], &ca_key.serialize_pem(), 0o600)?;
    write(&files[3], &m.key_pem, 0o600)?;
    write(&files[2], &m.cert_pem, 0o644)?;
    // The CA certificate last: its presence marks the set complete.
    write(&files[0], &m.ca_pem, 0o644)?;
    Ok(m)
}

/// SHA-256 fingerprint (hex) of the first certificate in a PEM text.
pub fn fingerprint_pem(pem: &str) -> Result<String, ServerError> {
    let der =
        pem_to_der(pem).ok_or_else(|| ServerError::Tls("CA file holds no certificate".into()))?;
    Ok(hex(&Sha256::digest(der)))
}

/// The DER bytes of the first `CERTIFICATE` block of a PEM text.
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
