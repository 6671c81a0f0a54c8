//! Socket.IO ([`socketioxide`]) with the same authentication as the HTTP
//! routes (feature `socketio`): [`SocketIoAuth`] authenticates connects,
//! [`SocketAuth`] hands handlers the context, [`Throttle`] limits events.

mod auth;
mod context;
mod throttle;

pub use socketioxide;

pub use self::{
    auth::{ConnectRefusal, SocketIoAuth},
    context::{NotAuthenticated, SocketAuth},
    throttle::{EventRateLimited, Throttle, RATE_LIMITED_EVENT},
};
