//! [`ResponseFuture`]: the response future of [`FailedAuthService`](super::FailedAuthService).

use std::{
    fmt,
    future::Future,
    net::IpAddr,
    pin::Pin,
    task::{ready, Context, Poll},
};

use http::{Response, StatusCode};
use pin_project_lite::pin_project;

use crate::FailedAuthLimiter;

pub(super) type Boxed<F> = Pin<Box<dyn Future<Output = <F as Future>::Output> + Send>>;

pin_project! {
    /// The response future of [`FailedAuthService`](super::FailedAuthService).
    pub struct ResponseFuture<F: Future, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F: Future, B> {
        Inner {
            #[pin]
            future: F,
            // Who to charge if the answer is 401.
            charge: Option<(FailedAuthLimiter, IpAddr)>,
        },
        Denied {
            response: Option<Response<B>>,
        },
        Boxed {
            future: Boxed<F>,
        },
    }
}

impl<F: Future, B> ResponseFuture<F, B> {
    pub(super) fn inner(future: F, charge: Option<(FailedAuthLimiter, IpAddr)>) -> Self {
        Self {
            kind: Kind::Inner { future, charge },
        }
    }

    pub(super) fn denied(response: Response<B>) -> Self {
        Self {
            kind: Kind::Denied {
                response: Some(response),
            },
        }
    }

    pub(super) fn boxed(future: Boxed<F>) -> Self {
        Self {
            kind: Kind::Boxed { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, charge } => {
                let res = ready!(future.poll(cx))?;
                if res.status() == StatusCode::UNAUTHORIZED {
                    if let Some((limiter, ip)) = charge.take() {
                        limiter.charge_failure(ip);
                    }
                }
                Poll::Ready(Ok(res))
            }
            KindProj::Denied { response } => match response.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => panic!("ResponseFuture polled after completion"),
            },
            KindProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F: Future, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
