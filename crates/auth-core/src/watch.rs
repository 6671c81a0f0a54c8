//! Following a credential after the handshake: what a long-lived
//! connection (WebSocket, Socket.IO) holds to learn that its key was
//! revoked, rotated away, expired or edited. Start one with
//! [`Verifier::watch_credential`](crate::Verifier::watch_credential).

pub use crate::verifier::{CredentialChange, CredentialWatch};
