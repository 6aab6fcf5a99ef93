//! The gRPC ingest server's settings, the same where agents connect to an aggregator and
//! where they connect to a relay.

use std::time::Duration;

use crate::certs::CertKey;

/// A stream's flow-control window, sized for small delta messages (the HTTP/2 default,
/// 64 KiB − 1): what h2 may buffer for a stream while its task waits. hyper's default (1 MiB)
/// let 10,000 stalled one-stream connections hold 10 GiB; a larger message (a snapshot up to
/// --max-message-bytes) still arrives, in window-sized steps. The connection window stays
/// hyper's 1 MiB, shared by the streams of a multiplexed connection.
pub const STREAM_WINDOW: u32 = 65_535;

/// A server builder for agents' streams: HTTP/2 keep-alive every 20 s, [`STREAM_WINDOW`],
/// no Nagle delay, and TLS with `tls` (`None`: plaintext, local runs).
pub fn ingest_server(
    tls: Option<&CertKey>,
) -> Result<tonic::transport::Server, tonic::transport::Error> {
    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .tcp_nodelay(true);
    match tls {
        Some(pair) => grpc.tls_config(tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&pair.cert_pem, &pair.key_pem),
        )),
        None => Ok(grpc),
    }
}

/// The peer of a request as text (for logs), empty when the transport does not know it.
pub fn remote<T>(request: &tonic::Request<T>) -> String {
    request
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}
