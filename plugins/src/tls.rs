//! One TLS crypto provider for every client: ring, as rustls uses it for FTPS and SFTP
//! keys already. reqwest 0.13 is built without its own provider (its default is AWS-LC, a C
//! library built with cmake, which the S3 client would bring in only for this), so the
//! provider is installed once, before the first HTTP client is built.

/// Installs ring as the process's rustls provider (if no other was installed first).
pub fn use_ring() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
