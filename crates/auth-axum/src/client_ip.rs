//! The client address for audit events, from axum's connection info.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::{Extensions, HeaderMap};

/// The peer address axum records when the app is served with
/// `into_make_service_with_connect_info::<SocketAddr>()`. Pass it to
/// [`AuthLayerBuilder::client_ip`](auth_tower::AuthLayerBuilder::client_ip).
///
/// ```
/// # fn layer(verifier: auth_core::Verifier) -> auth_tower::AuthLayer {
/// auth_tower::AuthLayer::builder(verifier).client_ip(auth_axum::connect_info_ip).build()
/// # }
/// ```
pub fn connect_info_ip(_headers: &HeaderMap, extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}
