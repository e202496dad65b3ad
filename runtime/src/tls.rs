//! The one rustls crypto provider of weir (aws-lc-rs). object_store's HTTP client already builds
//! rustls with aws-lc-rs; when a second provider (ring) is compiled in too, rustls cannot pick a
//! process default and the first TLS client built without an explicit provider panics. Both
//! binaries install this one at start, and code that builds its own TLS config asks for it here.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The provider every TLS client of weir uses.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// Makes aws-lc-rs the process default (idempotent; an already installed default is kept).
pub fn install_crypto_provider() {
    // Err means a default is already installed, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_default_is_aws_lc_rs_after_install() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        let p = rustls::crypto::CryptoProvider::get_default().expect("installed");
        let ours = rustls::crypto::aws_lc_rs::default_provider();
        assert_eq!(p.cipher_suites.len(), ours.cipher_suites.len());
        assert!(std::ptr::eq(super::crypto_provider().as_ref(), p.as_ref()));
    }
}
