//! The client side of SCRAM-SHA-256/512 (RFC 5802, RFC 7677) as Kafka uses it: no channel
//! binding, no authorization identity. Pure: the caller moves the messages over SaslAuthenticate.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Hash::Sha512 => {
                let mut m = <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            Hash::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// `=` and `,` are the only characters a SCRAM user name escapes.
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// One authentication in progress.
pub struct Scram {
    hash: Hash,
    password: String,
    client_first_bare: String,
    nonce: String,
    server_signature: Option<Vec<u8>>,
}

impl Scram {
    /// Starts with `nonce` (printable, no comma); returns the state and the client-first message.
    pub fn start(hash: Hash, user: &str, password: &str, nonce: &str) -> (Scram, Vec<u8>) {
        let bare = format!("n={},r={nonce}", escape_name(user));
        let first = format!("n,,{bare}").into_bytes();
        (
            Scram {
                hash,
                password: password.to_string(),
                client_first_bare: bare,
                nonce: nonce.to_string(),
                server_signature: None,
            },
            first,
        )
    }

    /// The client-final message for the server-first message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| "SCRAM: the server's first message is not UTF-8".to_string())?;
        let attr = |k: &str| {
            text.split(',')
                .find_map(|p| p.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
        };
        if let Some(e) = attr("e") {
            return Err(format!("SCRAM: the server refused: {e}"));
        }
        let nonce = attr("r").ok_or("SCRAM: the server's first message has no nonce")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
            return Err("SCRAM: the server's nonce does not extend ours".into());
        }
        let salt = B64
            .decode(attr("s").ok_or("SCRAM: the server's first message has no salt")?)
            .map_err(|e| format!("SCRAM: bad salt: {e}"))?;
        let iterations: u32 = attr("i")
            .and_then(|i| i.parse().ok())
            .filter(|i| *i > 0)
            .ok_or("SCRAM: the server's first message has no valid iteration count")?;
        let h = self.hash;
        let salted = h.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server proves it knows the password too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(server_final);
        if let Some(e) = text.strip_prefix("e=") {
            return Err(format!("SCRAM: the server refused: {e}"));
        }
        let v = text
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .ok_or("SCRAM: the server's final message has no signature")?;
        let got = B64
            .decode(v)
            .map_err(|e| format!("SCRAM: bad server signature: {e}"))?;
        match &self.server_signature {
            Some(want) if *want == got => Ok(()),
            _ => Err("SCRAM: the server's signature does not match".into()),
        }
    }
}

/// A fresh client nonce.
pub fn nonce() -> String {
    let bytes: [u8; 24] = rand::random();
    B64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3.
    #[test]
    fn rfc_7677_example() {
        let (mut s, first) = Scram::start(Hash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let fin = s
            .client_final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        s.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(s.verify(b"v=AAAA").is_err());
        assert!(s
            .verify(b"e=invalid-proof")
            .unwrap_err()
            .contains("invalid-proof"));
    }

    #[test]
    fn a_server_nonce_that_does_not_extend_ours_is_refused() {
        let (mut s, _) = Scram::start(Hash::Sha512, "a=b,c", "pw", "abc");
        assert!(s
            .client_final(b"r=xyz123,s=AAAA,i=4096")
            .unwrap_err()
            .contains("nonce"));
        assert!(s
            .client_final(b"r=abcdef,s=AAAA")
            .unwrap_err()
            .contains("iteration"));
        assert_eq!(escape_name("a=b,c"), "a=3Db=2Cc");
    }
}
