//! [`CredentialWatch`]: what a long-lived connection (WebSocket, Socket.IO)
//! holds to follow its credential after the handshake.
//!
//! One shared watch per key (and per JWT user) reads the store when the
//! store's change feed names that key, and when the key's end comes, and
//! publishes what it read; every connection on the key evaluates that
//! against its own context and client address. A change therefore costs
//! one store read however many connections hold the key, and a connection
//! costs one channel receiver.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use dashmap::DashMap;
use time::OffsetDateTime;
use tokio::sync::{watch, Notify};

use super::Verifier;
use crate::recheck::recheck;
use crate::{
    clock::WallClock, policy::KeyPolicy, scope::ScopePolicy, store::ChangeListener,
    store::KeyChange, AuthContext, KeyId, KeyStore, RejectReason, ScopeSet,
};

/// What became of a watched connection's credential.
#[derive(Clone, Debug)]
pub enum CredentialChange {
    /// The credential still allows the connection, under this context: the
    /// connection's scopes cut down to the key's new scopes (never widened:
    /// a wider grant takes a new connection) and the key's new policy.
    Updated(AuthContext),
    /// The credential no longer allows the connection: close it. Revoked,
    /// expired, disabled, removed, the client address no longer on the
    /// key's allowlist, the JWT's user secret regenerated, or the store
    /// could not confirm it (fail closed).
    Ended(RejectReason),
}

/// Follows the credential of one connection; made by
/// [`Verifier::watch_credential`]. Small (a context, an address and a
/// channel receiver) and cheap to hold for every open connection.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// # use std::sync::Arc;
/// use auth_core::{*, store::KeyUpdate, watch::CredentialChange};
/// # let store = Arc::new(MemoryKeyStore::new());
/// # let Keys { issuer, verifier, .. } = Keys::builder(store.clone(), TokenPrefix::new("st_").unwrap())
/// #     .hasher(SecretHasher::for_tests())
/// #     .build();
/// let scopes = ScopeSet::parse(["read", "write"]).unwrap();
/// let key = issuer.issue(NewKey::new(Principal::user("a"), "ws", scopes)).await.unwrap();
/// let ctx = verifier.verify(key.token.expose_secret()).await.unwrap();
/// let mut watch = verifier.watch_credential(&ctx, None);
///
/// store.update(key.record.id, &KeyUpdate::default().scopes(ScopeSet::parse(["read"]).unwrap())).await.unwrap();
/// match watch.changed().await {
///     CredentialChange::Updated(ctx) => assert!(!ctx.scopes().has("write")),
///     CredentialChange::Ended(reason) => unreachable!("{reason:?}"),
/// }
/// issuer.revoke(key.record.id).await.unwrap();
/// assert!(matches!(watch.changed().await, CredentialChange::Ended(RejectReason::Revoked)));
/// # });
/// ```
#[derive(Debug)]
pub struct CredentialWatch {
    ctx: AuthContext,
    client: Option<IpAddr>,
    source: Source,
    /// Whether the value found at subscription was looked at yet.
    started: bool,
    /// Set once the credential ended: it stays ended.
    ended: Option<RejectReason>,
}

#[derive(Debug)]
enum Source {
    Key(Watched<KeyView>),
    #[cfg(feature = "jwt")]
    Secret(Watched<SecretView>, i64),
    /// Nothing to follow (a JWT without an authority to ask).
    Nothing,
}

#[derive(Debug)]
struct Watched<V> {
    /// The last read and its tag.
    rx: watch::Receiver<(u64, V)>,
    slot: Arc<Slot<V>>,
}

/// What the shared watch of a key last read.
#[derive(Clone, Debug)]
enum KeyView {
    Reading,
    Active(Arc<ActiveKey>),
    Ended(RejectReason),
}

#[derive(Debug)]
struct ActiveKey {
    /// The key's scopes, implied ones added.
    scopes: ScopeSet,
    policy: Option<Arc<KeyPolicy>>,
}

/// What the shared watch of a JWT user's secret last read.
#[cfg(feature = "jwt")]
#[derive(Clone, Copy, Debug)]
enum SecretView {
    Reading,
    /// The current generation; `None`: no secret, or not confirmed.
    Generation(Option<i64>),
}

/// One shared watch: the last read, and the signal to read again.
#[derive(Debug)]
struct Slot<V> {
    state: watch::Sender<(u64, V)>,
    reread: Notify,
    /// Changes announced so far; a read is tagged with the count at its start.
    announced: AtomicU64,
    /// The next read follows a resync: spread it out.
    resync: AtomicBool,
}

impl<V> Slot<V> {
    fn new(initial: V) -> Self {
        Self {
            state: watch::Sender::new((0, initial)),
            reread: Notify::new(),
            announced: AtomicU64::new(0),
            resync: AtomicBool::new(false),
        }
    }

    fn read_again(&self, resync: bool) {
        if resync {
            self.resync.store(true, Ordering::Release);
        }
        self.announced.fetch_add(1, Ordering::AcqRel);
        self.reread.notify_one();
    }

    /// A read starts: what was announced so far is in it. Its tag, and
    /// whether it follows a resync.
    fn start_read(&self) -> (u64, bool) {
        let tag = self.announced.load(Ordering::Acquire);
        (tag, self.resync.swap(false, Ordering::AcqRel))
    }

    /// Whether no change was announced since the read tagged `tag` began.
    fn is_current(&self, tag: u64) -> bool {
        self.announced.load(Ordering::Acquire) == tag
    }
}

/// What one evaluation decided.
enum Verdict {
    Same,
    Change(CredentialChange),
}

impl CredentialWatch {
    /// The connection's current context (the one it was opened with, until
    /// an [`CredentialChange::Updated`] replaces it).
    pub fn context(&self) -> &AuthContext {
        &self.ctx
    }

    /// Resolves at the next change that concerns this connection.
    /// Cancel-safe: use it in `select!` beside the connection's reads.
    /// After [`CredentialChange::Ended`] it resolves at once, again.
    pub async fn changed(&mut self) -> CredentialChange {
        if let Some(reason) = self.ended {
            return CredentialChange::Ended(reason);
        }
        loop {
            // The value found at subscription is looked at once, unless a
            // read is due: then it may predate this connection's own
            // verification, and the read decides.
            let first = !std::mem::replace(&mut self.started, true);
            let verdict = match &mut self.source {
                Source::Nothing => return std::future::pending().await,
                Source::Key(w) => {
                    if !w.next(first).await {
                        continue;
                    }
                    let view = w.rx.borrow_and_update().1.clone();
                    evaluate_key(&self.ctx, self.client, view)
                }
                #[cfg(feature = "jwt")]
                Source::Secret(w, generation) => {
                    if !w.next(first).await {
                        continue;
                    }
                    match w.rx.borrow_and_update().1 {
                        SecretView::Reading => Verdict::Same,
                        SecretView::Generation(Some(g)) if g == *generation => Verdict::Same,
                        SecretView::Generation(_) => {
                            Verdict::Change(CredentialChange::Ended(RejectReason::Revoked))
                        }
                    }
                }
            };
            let change = match verdict {
                Verdict::Same => continue,
                Verdict::Change(change) => change,
            };
            match &change {
                CredentialChange::Updated(ctx) => self.ctx = ctx.clone(),
                CredentialChange::Ended(reason) => self.ended = Some(*reason),
            }
            return change;
        }
    }
}

impl<V> Watched<V> {
    /// Waits for a value to look at; `false`: none this time (the value at
    /// subscription, read before a change that another read will bring).
    async fn next(&mut self, first: bool) -> bool {
        if first {
            return self.slot.is_current(self.rx.borrow().0);
        }
        if self.rx.changed().await.is_err() {
            // The verifier is gone: nothing more will be heard.
            std::future::pending::<()>().await;
        }
        true
    }
}

fn evaluate_key(ctx: &AuthContext, client: Option<IpAddr>, view: KeyView) -> Verdict {
    let key = match view {
        KeyView::Reading => return Verdict::Same,
        KeyView::Ended(reason) => return Verdict::Change(CredentialChange::Ended(reason)),
        KeyView::Active(key) => key,
    };
    let scopes = ctx.scopes().intersect(&key.scopes);
    let narrowed = scopes != *ctx.scopes();
    if narrowed && ctx.is_impersonating() {
        // Whether the key still holds the impersonation scope is the
        // layer's to decide: end rather than guess.
        return Verdict::Change(CredentialChange::Ended(RejectReason::ImpersonationDenied));
    }
    let policy_changed = ctx.key_policy() != key.policy.as_deref();
    if !narrowed && !policy_changed {
        return Verdict::Same;
    }
    let updated = ctx.with_key_update(scopes, key.policy.clone());
    if !updated.allows_ip(client) {
        return Verdict::Change(CredentialChange::Ended(RejectReason::IpNotAllowed));
    }
    Verdict::Change(CredentialChange::Updated(updated))
}

/// The shared watches of one verifier, fed by its store's change feed.
pub(crate) struct Watches {
    keys: DashMap<KeyId, Arc<Slot<KeyView>>>,
    store: Arc<dyn KeyStore>,
    clock: Arc<dyn WallClock>,
    policy: ScopePolicy,
    #[cfg(feature = "jwt")]
    users: DashMap<Arc<str>, Arc<Slot<SecretView>>>,
    #[cfg(feature = "jwt")]
    secrets: Option<Arc<dyn crate::jwt::UserSecretStore>>,
}

impl Watches {
    pub(crate) fn new(
        store: Arc<dyn KeyStore>,
        clock: Arc<dyn WallClock>,
        policy: ScopePolicy,
        #[cfg(feature = "jwt")] secrets: Option<Arc<dyn crate::jwt::UserSecretStore>>,
    ) -> Arc<Self> {
        let this = Arc::new(Self {
            keys: DashMap::new(),
            store,
            clock,
            policy,
            #[cfg(feature = "jwt")]
            users: DashMap::new(),
            #[cfg(feature = "jwt")]
            secrets,
        });
        let weak: std::sync::Weak<dyn ChangeListener> =
            Arc::downgrade(&(this.clone() as Arc<dyn ChangeListener>));
        this.store.changes().subscribe(weak.clone());
        #[cfg(feature = "jwt")]
        if let Some(secrets) = &this.secrets {
            // The durable stores share one feed for keys and secrets.
            if !std::ptr::eq(secrets.secret_changes(), this.store.changes()) {
                secrets.secret_changes().subscribe(weak);
            }
        }
        this
    }

    fn watch_key(self: &Arc<Self>, id: KeyId) -> Watched<KeyView> {
        let entry = self.keys.entry(id).or_insert_with(|| {
            let slot = Arc::new(Slot::new(KeyView::Reading));
            tokio::spawn(self.clone().follow_key(id, slot.clone()));
            slot
        });
        // Subscribed under the map's lock: the watch cannot retire meanwhile.
        Watched {
            rx: entry.state.subscribe(),
            slot: entry.clone(),
        }
    }

    async fn read_key(&self, id: KeyId, resync: bool) -> (KeyView, Option<OffsetDateTime>) {
        match recheck(resync, || self.store.get(id)).await {
            Ok(Some(r)) => match r.check_active(self.clock.now()) {
                Ok(()) => {
                    let key = ActiveKey {
                        scopes: self.policy.expand(&r.scopes),
                        policy: KeyPolicy::of(&r).map(Arc::new),
                    };
                    (KeyView::Active(Arc::new(key)), r.ends().map(|(t, _)| t))
                }
                Err(reason) => (KeyView::Ended(reason), None),
            },
            Ok(None) => (KeyView::Ended(RejectReason::UnknownKey), None),
            Err(e) => {
                tracing::warn!(key_id = %id, error = %e, "cannot confirm a connection's key; ending it");
                (KeyView::Ended(RejectReason::StoreUnavailable), None)
            }
        }
    }

    /// The task behind a key's watch: reads, publishes, waits for the next
    /// reason to read; retires when no connection holds the key.
    async fn follow_key(self: Arc<Self>, id: KeyId, slot: Arc<Slot<KeyView>>) {
        loop {
            let (tag, resync) = slot.start_read();
            let (view, ends) = self.read_key(id, resync).await;
            slot.state.send_replace((tag, view));
            let clock = self.clock.clone();
            let until_end = async move {
                match ends {
                    Some(t) => {
                        let left = (t - clock.now()).max(time::Duration::ZERO);
                        tokio::time::sleep(left.unsigned_abs()).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(until_end);
            loop {
                tokio::select! {
                    () = slot.reread.notified() => break,
                    () = &mut until_end => break,
                    () = slot.state.closed() => {
                        let unused = |_: &KeyId, s: &Arc<Slot<KeyView>>| s.state.receiver_count() == 0;
                        if self.keys.remove_if(&id, unused).is_some() {
                            return;
                        }
                        // A connection joined meanwhile: wait on.
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
    }

    #[cfg(feature = "jwt")]
    fn watch_user(self: &Arc<Self>, user: &str) -> Option<Watched<SecretView>> {
        let secrets = self.secrets.clone()?;
        let entry = self.users.entry(user.into()).or_insert_with(|| {
            let slot = Arc::new(Slot::new(SecretView::Reading));
            tokio::spawn(self.clone().follow_user(user.into(), secrets, slot.clone()));
            slot
        });
        Some(Watched {
            rx: entry.state.subscribe(),
            slot: entry.clone(),
        })
    }

    #[cfg(feature = "jwt")]
    async fn follow_user(
        self: Arc<Self>,
        user: Arc<str>,
        secrets: Arc<dyn crate::jwt::UserSecretStore>,
        slot: Arc<Slot<SecretView>>,
    ) {
        loop {
            let (tag, resync) = slot.start_read();
            let read = recheck(resync, || secrets.get_secret(&user)).await;
            let generation = match read {
                Ok(s) => s.map(|s| s.generation),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot confirm a connection's user secret; ending it");
                    None
                }
            };
            slot.state
                .send_replace((tag, SecretView::Generation(generation)));
            loop {
                tokio::select! {
                    () = slot.reread.notified() => break,
                    () = slot.state.closed() => {
                        let unused = |_: &Arc<str>, s: &Arc<Slot<SecretView>>| s.state.receiver_count() == 0;
                        if self.users.remove_if(&user, unused).is_some() {
                            return;
                        }
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
    }
}

impl ChangeListener for Watches {
    fn on_change(&self, change: &KeyChange) {
        match change {
            KeyChange::Revoked(id) | KeyChange::Updated(id) => {
                if let Some(slot) = self.keys.get(id) {
                    slot.read_again(false);
                }
            }
            KeyChange::UserSecret(_user) =>
            {
                #[cfg(feature = "jwt")]
                if let Some(slot) = self.users.get(_user.as_str()) {
                    slot.read_again(false);
                }
            }
            KeyChange::All => {
                for slot in self.keys.iter() {
                    slot.read_again(true);
                }
                #[cfg(feature = "jwt")]
                for slot in self.users.iter() {
                    slot.read_again(true);
                }
            }
        }
    }
}

impl Verifier {
    /// Follows the credential of a connection that authenticated once and
    /// stays open (a WebSocket, a Socket.IO socket): `ctx` is its context,
    /// `client` the address it was admitted from
    /// ([`ClientIp`](crate::client_ip::ClientIp)). Call within a Tokio runtime.
    ///
    /// [`CredentialWatch::changed`] resolves when the key is revoked,
    /// expires, is disabled or removed, when an edit takes the client
    /// address off the key's allowlist, or when a JWT's user secret is
    /// regenerated ([`CredentialChange::Ended`]: close the connection,
    /// with WebSocket code 1008), and when an edit narrows the key's
    /// scopes or changes its policy ([`CredentialChange::Updated`]: go on
    /// with the new context). A connection acting on behalf of another user
    /// ends when its key's scopes narrow.
    ///
    /// Connections on one key share one watch: a change costs one store
    /// read whatever their number.
    pub fn watch_credential(&self, ctx: &AuthContext, client: Option<IpAddr>) -> CredentialWatch {
        let source = match ctx.key_id() {
            Some(id) => Source::Key(self.inner.watches.watch_key(id)),
            #[cfg(feature = "jwt")]
            None => match (
                ctx.secret_generation(),
                self.inner.watches.watch_user(ctx.actor().user_id()),
            ) {
                (Some(generation), Some(w)) => Source::Secret(w, generation),
                _ => Source::Nothing,
            },
            #[cfg(not(feature = "jwt"))]
            None => Source::Nothing,
        };
        CredentialWatch {
            ctx: ctx.clone(),
            client,
            source,
            started: false,
            ended: None,
        }
    }
}
