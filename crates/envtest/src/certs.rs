//! The control plane's PKI: a serving CA and certificate for the API server, a client CA for
//! user identities, and the service-account token signing key.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its private key, PEM encoded.
pub(crate) struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

pub(crate) struct Pki {
    /// CA that signed the API server's serving certificate (clients trust it).
    pub serving_ca_pem: String,
    /// The API server's serving certificate, for 127.0.0.1, localhost and the in-cluster names.
    pub serving: CertPair,
    /// Client CA (`--client-ca-file`): certificates it signs authenticate as their CN/O.
    client_ca: CertifiedIssuer<'static, KeyPair>,
    /// Private key signing service-account tokens (PKCS#8).
    pub service_account_key_pem: String,
    /// Its public key (PKIX), verifying them.
    pub service_account_pub_pem: String,
}

/// The object identifier of an X.509 organisation (O) attribute.
const OID_ORGANIZATION: [u64; 4] = [2, 5, 4, 10];

fn ca_params(common_name: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl Pki {
    pub fn generate() -> anyhow::Result<Self> {
        let serving_ca = CertifiedIssuer::self_signed(
            ca_params("silverback-envtest-serving-ca")?,
            KeyPair::generate()?,
        )?;
        let client_ca = CertifiedIssuer::self_signed(
            ca_params("silverback-envtest-client-ca")?,
            KeyPair::generate()?,
        )?;

        let mut params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
        ])?;
        for ip in ["127.0.0.1", "::1", "10.0.0.1"] {
            params
                .subject_alt_names
                .push(SanType::IpAddress(ip.parse()?));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &serving_ca)?;

        let sa_key = KeyPair::generate()?;
        Ok(Self {
            serving_ca_pem: serving_ca.pem(),
            serving: CertPair {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            },
            client_ca,
            service_account_key_pem: sa_key.serialize_pem(),
            service_account_pub_pem: sa_key.public_key_pem(),
        })
    }

    /// The client CA certificate, for `--client-ca-file`.
    pub fn client_ca_pem(&self) -> String {
        self.client_ca.pem()
    }

    /// A client certificate authenticating as `user` in `groups` (at most two; the API server
    /// adds `system:authenticated` itself).
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> anyhow::Result<CertPair> {
        anyhow::ensure!(
            groups.len() <= 2,
            "a client certificate carries at most two groups here, got {groups:?}"
        );
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        // rcgen keeps one value per attribute type, so a second O is written under the same OID
        // as a custom attribute type; the API server reads every O attribute as a group.
        if let Some(first) = groups.first() {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *first);
        }
        if let Some(second) = groups.get(1) {
            params
                .distinguished_name
                .push(DnType::CustomDnType(OID_ORGANIZATION.to_vec()), *second);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.client_ca)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
