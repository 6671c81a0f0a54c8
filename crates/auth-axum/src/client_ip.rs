//! The socket peer's address, from axum's connection info, for the auth
//! layer's client-address resolution.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::{Extensions, HeaderMap};

/// The peer address axum records when the app is served with
/// `into_make_service_with_connect_info::<SocketAddr>()`. Pass it to
/// [`AuthLayerBuilder::client_ip`](auth_tower::AuthLayerBuilder::client_ip);
/// behind a reverse proxy, also pass the proxies'
/// [`TrustedProxies`](auth_core::client_ip::TrustedProxies) to
/// [`AuthLayerBuilder::trusted_proxies`](auth_tower::AuthLayerBuilder::trusted_proxies),
/// so that the client their forwarding header names is used instead.
///
/// ```
/// # fn layer(verifier: auth_core::Verifier) -> auth_tower::AuthLayer {
/// use auth_core::client_ip::TrustedProxies;
///
/// auth_tower::AuthLayer::builder(verifier)
///     .client_ip(auth_axum::connect_info_ip)
///     .trusted_proxies(TrustedProxies::new(["10.0.0.0/8"]).unwrap())
///     .build()
/// # }
/// ```
pub fn connect_info_ip(_headers: &HeaderMap, extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}
