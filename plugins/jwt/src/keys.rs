//! Verification keys: each bound to one algorithm, from PEM, an HMAC secret or a JWK.
//!
//! A key's material decides which algorithms it can serve (an RSA key never serves HS256), and
//! each key is valid for exactly one algorithm, so a token cannot pick how its signature is
//! checked (RFC 8725 §3.1, §2.1).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use serde::Deserialize;
use sha2::{Sha256, Sha384, Sha512};

/// RSA keys shorter than this are refused (RFC 7518 §3.3).
const MIN_RSA_BITS: usize = 2048;

/// A JWS algorithm the plugin verifies. `none` is not one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Alg {
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256 (salt as long as the hash).
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Alg {
    /// The algorithm named by a JOSE header's `alg`, if supported.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "HS256" => Self::HS256,
            "HS384" => Self::HS384,
            "HS512" => Self::HS512,
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            _ => return None,
        })
    }

    fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }

    fn is_rsa(self) -> bool {
        matches!(
            self,
            Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 | Self::PS384 | Self::PS512
        )
    }

    /// The shortest HMAC secret RFC 7518 §3.2 allows: the hash's output size.
    fn min_secret_len(self) -> usize {
        match self {
            Self::HS384 => 48,
            Self::HS512 => 64,
            _ => 32,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a key in the config could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The entry gives no key material, or more than one.
    #[error("{0}: give exactly one of `pem`, `secret`, `secret_base64`")]
    Material(String),
    /// The material does not fit the algorithm.
    #[error("{at}: {alg} {need}")]
    WrongMaterial {
        /// Which key.
        at: String,
        /// Its algorithm.
        alg: Alg,
        /// What the algorithm needs.
        need: &'static str,
    },
    /// The PEM text is not a public key of the algorithm's type.
    #[error("{at}: not a {expected} public key in PEM (`-----BEGIN PUBLIC KEY-----`)")]
    Pem {
        /// Which key.
        at: String,
        /// The key type the algorithm needs.
        expected: &'static str,
    },
    /// An HMAC secret shorter than the hash.
    #[error("{at}: an {alg} secret must be at least {min} bytes (it has {len})")]
    ShortSecret {
        /// Which key.
        at: String,
        /// Its algorithm.
        alg: Alg,
        /// The minimum length.
        min: usize,
        /// The given length.
        len: usize,
    },
    /// An RSA key below the minimum size.
    #[error("{at}: RSA keys must have at least {MIN_RSA_BITS} bits (this one has {bits})")]
    ShortRsa {
        /// Which key.
        at: String,
        /// Its size.
        bits: usize,
    },
    /// Base64 that does not decode.
    #[error("{at}: `{field}` is not valid base64")]
    Base64 {
        /// Which key.
        at: String,
        /// Which field.
        field: &'static str,
    },
    /// A JWK that does not describe a usable key.
    #[error("{at}: {reason}")]
    Jwk {
        /// Which key.
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// The JWKS text is not a JWKS.
    #[error("jwks_json: not a JWKS document ({0})")]
    JwksJson(String),
}

/// The verifying half of a key.
enum Material {
    Hmac(Vec<u8>),
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// A key that verifies signatures of one algorithm.
pub struct Key {
    /// The key id tokens name in their header's `kid`, if the key has one.
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    pub alg: Alg,
    material: Material,
}

impl fmt::Debug for Key {
    // Secrets stay out of debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A key entry in the plugin's config (`keys = [...]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key id; when set, tokens with a `kid` use this key only if their `kid` matches.
    pub kid: Option<String>,
    /// The algorithm the key is valid for.
    pub alg: Alg,
    /// A public key in PEM (`BEGIN PUBLIC KEY`, or `BEGIN RSA PUBLIC KEY` for RSA).
    pub pem: Option<String>,
    /// An HMAC secret as text (its UTF-8 bytes are the key).
    pub secret: Option<String>,
    /// An HMAC secret as base64 (standard or URL-safe alphabet, padding optional).
    pub secret_base64: Option<String>,
}

impl fmt::Debug for KeyConfig {
    // Secrets stay out of debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyConfig")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("pem", &self.pem)
            .finish_non_exhaustive()
    }
}

impl KeyConfig {
    /// The key this entry describes; `at` names it in errors (`keys[0]`).
    pub fn to_key(&self, at: &str) -> Result<Key, KeyError> {
        let given = [
            self.pem.is_some(),
            self.secret.is_some(),
            self.secret_base64.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(KeyError::Material(at.to_owned()));
        }
        let material = if let Some(pem) = &self.pem {
            material_from_pem(self.alg, pem, at)?
        } else {
            if !self.alg.is_hmac() {
                return Err(KeyError::WrongMaterial {
                    at: at.to_owned(),
                    alg: self.alg,
                    need: "needs a public key in `pem`, not a secret",
                });
            }
            let secret = match (&self.secret, &self.secret_base64) {
                (Some(text), _) => text.as_bytes().to_vec(),
                (None, Some(b64)) => decode_any_base64(b64.trim()).ok_or(KeyError::Base64 {
                    at: at.to_owned(),
                    field: "secret_base64",
                })?,
                (None, None) => return Err(KeyError::Material(at.to_owned())),
            };
            hmac_material(self.alg, secret, at)?
        };
        Ok(Key {
            kid: self.kid.clone(),
            alg: self.alg,
            material,
        })
    }
}

fn decode_any_base64(text: &str) -> Option<Vec<u8>> {
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

fn hmac_material(alg: Alg, secret: Vec<u8>, at: &str) -> Result<Material, KeyError> {
    let min = alg.min_secret_len();
    if secret.len() < min {
        return Err(KeyError::ShortSecret {
            at: at.to_owned(),
            alg,
            min,
            len: secret.len(),
        });
    }
    Ok(Material::Hmac(secret))
}

fn rsa_material(key: RsaPublicKey, at: &str) -> Result<Material, KeyError> {
    let bits = key.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(KeyError::ShortRsa {
            at: at.to_owned(),
            bits,
        });
    }
    Ok(Material::Rsa(key))
}

fn material_from_pem(alg: Alg, pem: &str, at: &str) -> Result<Material, KeyError> {
    let pem = pem.trim();
    let bad = |expected| KeyError::Pem {
        at: at.to_owned(),
        expected,
    };
    match alg {
        Alg::HS256 | Alg::HS384 | Alg::HS512 => Err(KeyError::WrongMaterial {
            at: at.to_owned(),
            alg,
            need: "needs `secret` or `secret_base64`, not a public key",
        }),
        Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
            let key = RsaPublicKey::from_public_key_pem(pem)
                .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
                .map_err(|_| bad("RSA"))?;
            rsa_material(key, at)
        }
        Alg::ES256 => p256::ecdsa::VerifyingKey::from_public_key_pem(pem)
            .map(Material::P256)
            .map_err(|_| bad("P-256")),
        Alg::ES384 => p384::ecdsa::VerifyingKey::from_public_key_pem(pem)
            .map(Material::P384)
            .map_err(|_| bad("P-384")),
        Alg::EdDSA => ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map(Material::Ed25519)
            .map_err(|_| bad("Ed25519")),
    }
}

/// A JSON Web Key (RFC 7517) as found in a JWKS. Unknown members (`x5c`, `key_ops`, ...) are
/// ignored: a JWKS is another system's document, not this plugin's config.
#[derive(Debug, Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
}

/// A JWK Set: `{"keys": [...]}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwks {
    keys: Vec<serde_json::Value>,
}

impl Jwks {
    /// Parses a JWKS given as text (e.g. a file's content through `${file:...}`).
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        serde_json::from_str(text).map_err(|e| KeyError::JwksJson(e.to_string()))
    }

    /// The usable keys. Encryption keys (`"use": "enc"`) and key types or algorithms this
    /// plugin does not verify are skipped; a key of a supported type that is malformed is an
    /// error. `at` names the set in errors (`jwks`).
    pub fn to_keys(&self, at: &str) -> Result<Vec<Key>, KeyError> {
        let mut keys = Vec::new();
        for (i, value) in self.keys.iter().enumerate() {
            let at = format!("{at}.keys[{i}]");
            let jwk: Jwk = serde_json::from_value(value.clone()).map_err(|e| KeyError::Jwk {
                at: at.clone(),
                reason: e.to_string(),
            })?;
            if let Some(key) = jwk_to_key(&jwk, &at)? {
                keys.push(key);
            }
        }
        Ok(keys)
    }
}

fn b64url_field(
    value: &Option<String>,
    field: &'static str,
    at: &str,
) -> Result<Vec<u8>, KeyError> {
    let text = value.as_deref().ok_or_else(|| KeyError::Jwk {
        at: at.to_owned(),
        reason: format!("`{field}` is missing"),
    })?;
    URL_SAFE_NO_PAD.decode(text).map_err(|_| KeyError::Base64 {
        at: at.to_owned(),
        field,
    })
}

fn jwk_to_key(jwk: &Jwk, at: &str) -> Result<Option<Key>, KeyError> {
    if jwk.usage.as_deref() == Some("enc") {
        return Ok(None);
    }
    let named = match jwk.alg.as_deref() {
        Some(name) => match Alg::from_name(name) {
            Some(alg) => Some(alg),
            None => return Ok(None),
        },
        None => None,
    };
    let jwk_error = |reason: &str| KeyError::Jwk {
        at: at.to_owned(),
        reason: reason.to_owned(),
    };
    let (alg, material) = match jwk.kty.as_str() {
        "RSA" => {
            // RS256 is the algorithm every OpenID provider supports; a JWKS that leaves out
            // `alg` (some providers do) means it.
            let alg = named.unwrap_or(Alg::RS256);
            if !alg.is_rsa() {
                return Err(jwk_error(&format!("an RSA key cannot be used for {alg}")));
            }
            let n = BigUint::from_bytes_be(&b64url_field(&jwk.n, "n", at)?);
            let e = BigUint::from_bytes_be(&b64url_field(&jwk.e, "e", at)?);
            let key = RsaPublicKey::new(n, e)
                .map_err(|e| jwk_error(&format!("not a valid RSA public key ({e})")))?;
            (alg, rsa_material(key, at)?)
        }
        "EC" => {
            let (alg, size) = match jwk.crv.as_deref() {
                Some("P-256") => (Alg::ES256, 32),
                Some("P-384") => (Alg::ES384, 48),
                _ => return Ok(None),
            };
            if named.is_some_and(|n| n != alg) {
                return Err(jwk_error(&format!(
                    "curve {} does not match alg {}",
                    jwk.crv.as_deref().unwrap_or_default(),
                    jwk.alg.as_deref().unwrap_or_default()
                )));
            }
            let x = b64url_field(&jwk.x, "x", at)?;
            let y = b64url_field(&jwk.y, "y", at)?;
            if x.len() != size || y.len() != size {
                return Err(jwk_error("`x` and `y` have the wrong length for the curve"));
            }
            // SEC1 uncompressed point: 0x04 || x || y.
            let mut sec1 = Vec::with_capacity(1 + 2 * size);
            sec1.push(4);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            let material = if alg == Alg::ES256 {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map(Material::P256)
            } else {
                p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map(Material::P384)
            }
            .map_err(|_| jwk_error("not a point on the curve"))?;
            (alg, material)
        }
        "OKP" => {
            if jwk.crv.as_deref() != Some("Ed25519") {
                return Ok(None);
            }
            if named.is_some_and(|n| n != Alg::EdDSA) {
                return Err(jwk_error("an Ed25519 key is only valid for EdDSA"));
            }
            let x = b64url_field(&jwk.x, "x", at)?;
            let bytes: [u8; 32] = x
                .as_slice()
                .try_into()
                .map_err(|_| jwk_error("`x` must be 32 bytes"))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|_| jwk_error("not a valid Ed25519 public key"))?;
            (Alg::EdDSA, Material::Ed25519(key))
        }
        "oct" => {
            let alg = named.unwrap_or(Alg::HS256);
            if !alg.is_hmac() {
                return Err(jwk_error(&format!(
                    "a symmetric key cannot be used for {alg}"
                )));
            }
            (alg, hmac_material(alg, b64url_field(&jwk.k, "k", at)?, at)?)
        }
        _ => return Ok(None),
    };
    Ok(Some(Key {
        kid: jwk.kid.clone(),
        alg,
        material,
    }))
}

impl Key {
    /// Whether `signature` is this key's signature of `message` under the key's algorithm.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use rsa::signature::Verifier;
        match (&self.material, self.alg) {
            (Material::Hmac(secret), Alg::HS256) => {
                hmac_verifies::<Hmac<Sha256>>(secret, message, signature)
            }
            (Material::Hmac(secret), Alg::HS384) => {
                hmac_verifies::<Hmac<Sha384>>(secret, message, signature)
            }
            (Material::Hmac(secret), Alg::HS512) => {
                hmac_verifies::<Hmac<Sha512>>(secret, message, signature)
            }
            (Material::Rsa(key), Alg::RS256) => pkcs1_verifies::<Sha256>(key, message, signature),
            (Material::Rsa(key), Alg::RS384) => pkcs1_verifies::<Sha384>(key, message, signature),
            (Material::Rsa(key), Alg::RS512) => pkcs1_verifies::<Sha512>(key, message, signature),
            (Material::Rsa(key), Alg::PS256) => pss_verifies::<Sha256>(key, message, signature),
            (Material::Rsa(key), Alg::PS384) => pss_verifies::<Sha384>(key, message, signature),
            (Material::Rsa(key), Alg::PS512) => pss_verifies::<Sha512>(key, message, signature),
            (Material::P256(key), Alg::ES256) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| key.verify(message, &s).is_ok()),
            (Material::P384(key), Alg::ES384) => p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| key.verify(message, &s).is_ok()),
            (Material::Ed25519(key), Alg::EdDSA) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|s| key.verify_strict(message, &s).is_ok()),
            // Construction binds material to its algorithm; any other pairing verifies nothing.
            _ => false,
        }
    }
}

fn hmac_verifies<M: Mac + hmac::digest::KeyInit>(
    secret: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(message);
    // `verify_slice` compares in constant time.
    mac.verify_slice(signature).is_ok()
}

fn pkcs1_verifies<D>(key: &RsaPublicKey, message: &[u8], signature: &[u8]) -> bool
where
    D: sha2::Digest + rsa::pkcs8::AssociatedOid,
{
    use rsa::signature::Verifier;
    let verifier = rsa::pkcs1v15::VerifyingKey::<D>::new(key.clone());
    rsa::pkcs1v15::Signature::try_from(signature)
        .is_ok_and(|s| verifier.verify(message, &s).is_ok())
}

fn pss_verifies<D>(key: &RsaPublicKey, message: &[u8], signature: &[u8]) -> bool
where
    D: sha2::Digest + hmac::digest::FixedOutputReset,
{
    use rsa::signature::Verifier;
    let verifier = rsa::pss::VerifyingKey::<D>::new(key.clone());
    rsa::pss::Signature::try_from(signature).is_ok_and(|s| verifier.verify(message, &s).is_ok())
}
