//! Test data: dataplane configs, TURN REST credentials, certificates, YAML and base64.

use std::process::Command;

use crate::process::require_tool;

/// A dataplane config for tests: one TURN-UDP listener on 127.0.0.1:`port` routed to
/// `endpoints`, with `auth` given as YAML (e.g. `{type: ephemeral, secret: s}`).
pub fn udp_config(port: u16, auth: &str, endpoints: &[&str]) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "version: v1alpha1\nname: default/test\ngeneration: 1\nrealm: turnpike.test\n\
         auth: {auth}\nlimits: {{maxAllocationsPerUser: 1000}}\nlisteners:\n  \
         - {{name: udp, protocol: TURN-UDP, address: 127.0.0.1, port: {port}, routes: [default/echo]}}\n\
         routes:\n  - {{name: default/echo, endpoints: [{}]}}\n",
        eps.join(", ")
    )
}

/// A dataplane config with TURN-TCP on `tcp_port` and TURN-TLS on `tls_port` (serving
/// `cert`), both on 127.0.0.1 and routed to `endpoints`.
pub fn stream_config(
    tcp_port: u16,
    tls_port: u16,
    cert: &ServerCert,
    secret: &str,
    endpoints: &[&str],
) -> String {
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>()
    };
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "version: v1alpha1\nname: default/test\ngeneration: 1\nrealm: turnpike.test\n\
         auth: {{type: ephemeral, secret: {secret}}}\n\
         limits: {{maxAllocationsPerUser: 1000}}\nlisteners:\n\
         \x20 - {{name: tcp, protocol: TURN-TCP, address: 127.0.0.1, port: {tcp_port}, routes: [default/echo]}}\n\
         \x20 - name: tls\n    protocol: TURN-TLS\n    address: 127.0.0.1\n    port: {tls_port}\n    routes: [default/echo]\n\
         \x20   tls:\n      certPem: |\n{}      keyPem: |\n{}\
         routes:\n  - {{name: default/echo, endpoints: [{}]}}\n",
        indent(&cert.cert_pem),
        indent(&cert.key_pem),
        eps.join(", ")
    )
}

/// TURN REST API credentials for `user`, valid `ttl` seconds: `(expiry:user, password)`.
pub fn rest_credentials(secret: &str, user: &str, ttl: u64) -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let username = format!("{}:{user}", now + ttl);
    let password = turnpike_contract::credentials::rest_password(secret, &username);
    (username, password)
}

/// One YAML document as JSON (None when it does not parse).
pub fn yaml_to_json(doc: &str) -> Option<serde_json::Value> {
    serde_yaml_ng::from_str(doc).ok()
}

pub fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// A certificate authority for TURN-TLS tests and the server certificates it signs.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub cert_pem: String,
}

/// A server certificate: PEM pair and the serial `openssl x509 -serial` prints.
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Turnpike test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) with a fresh random serial.
    pub fn server_cert(&self, names: &[&str]) -> ServerCert {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let serial: [u8; 8] = rand::random();
        let serial = [&[0x01u8][..], &serial].concat();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial.iter().map(|b| format!("{b:02X}")).collect(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// The serial (hex, upper case) of the certificate a TLS server on 127.0.0.1:`port`
/// presents to a new connection, read with `openssl s_client`.
pub fn served_serial(port: u16) -> Option<String> {
    require_tool("openssl");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 10 openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("serial=")
        .map(str::to_uppercase)
}
