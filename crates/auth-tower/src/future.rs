//! [`ResponseFuture`]: authentication, then the inner service's response.

use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{
    audit::PendingAudit,
    authenticate::{Authenticating, Outcome},
};

pin_project! {
    /// Response future of [`AuthService`](crate::AuthService).
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S::Future, S, ReqBody>,
        // Recorded when the inner response is known, or on drop.
        audit: Option<PendingAudit>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, B> {
        // Deciding; `service` is the inner service that was polled ready.
        Authenticating { auth: Authenticating<B>, service: S },
        Calling { #[pin] future: F },
        Refused { response: Option<Response<Bytes>> },
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn authenticating(auth: Authenticating<ReqBody>, service: S) -> Self {
        Self {
            state: State::Authenticating { auth, service },
            audit: None,
        }
    }

    pub(crate) fn calling(future: S::Future, audit: Option<PendingAudit>) -> Self {
        Self {
            state: State::Calling { future },
            audit,
        }
    }

    pub(crate) fn refused(response: Response<Bytes>, audit: Option<PendingAudit>) -> Self {
        if let Some(audit) = audit {
            audit.finish(Some(response.status()));
        }
        Self {
            state: State::Refused {
                response: Some(response),
            },
            audit: None,
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Authenticating { auth, service } => match ready!(auth.as_mut().poll(cx))
                {
                    Outcome::Pass(req, audit) => {
                        *this.audit = audit;
                        let future = service.call(req);
                        this.state.set(State::Calling { future });
                    }
                    Outcome::Reject(res, audit) => {
                        if let Some(audit) = audit {
                            audit.finish(Some(res.status()));
                        }
                        return Poll::Ready(Ok(res.map(ResBody::from)));
                    }
                },
                StateProj::Refused { response } => {
                    let response = response.take().expect("future polled after completion");
                    return Poll::Ready(Ok(response.map(ResBody::from)));
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    if let Some(audit) = this.audit.take() {
                        match result.as_ref() {
                            Ok(res) => audit.finish_with(Some(res.status()), res.extensions()),
                            Err(_) => audit.finish(None),
                        }
                    }
                    return Poll::Ready(result);
                }
            }
        }
    }
}
