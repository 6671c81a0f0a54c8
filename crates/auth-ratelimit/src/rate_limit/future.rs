//! [`ResponseFuture`]: the response future of [`RateLimitService`](super::RateLimitService).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use http::Response;
use pin_project_lite::pin_project;

use crate::headers::RateHeaders;

type BoxedResponse<F> = Pin<Box<dyn Future<Output = <F as Future>::Output> + Send>>;

pin_project! {
    /// The response future of [`RateLimitService`](super::RateLimitService).
    pub struct ResponseFuture<F: Future, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    pub(super) enum Kind<F: Future, B> {
        Inner {
            #[pin]
            future: F,
            headers: Option<RateHeaders>,
        },
        Denied {
            response: Option<Response<B>>,
        },
        Pending {
            future: BoxedResponse<F>,
        },
    }
}

impl<F: Future, B> ResponseFuture<F, B> {
    pub(super) fn new(kind: Kind<F, B>) -> Self {
        Self { kind }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, headers } => {
                let mut res = ready!(future.poll(cx))?;
                if let Some(h) = headers.take() {
                    h.apply(res.headers_mut());
                }
                Poll::Ready(Ok(res))
            }
            KindProj::Denied { response } => match response.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => panic!("ResponseFuture polled after completion"),
            },
            KindProj::Pending { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F: Future, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
