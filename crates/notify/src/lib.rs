//! Alert notifications: the channels behind warden's [`Notifier`] port and the
//! [`Dispatcher`] that delivers to them.
//!
//! - [`config`]: receivers as the config file names them (`ReceiverConfig`).
//! - [`channel`]: one module per kind (Slack, PagerDuty, email, webhook, Alertmanager), each
//!   rendering the payload its service expects.
//! - [`dispatch`]: a task and bounded queue per receiver, retries with backoff
//!   ([`retry`]), every delivery recorded in the [`log`].
//!
//! Secrets (webhook URLs, routing keys, passwords, HMAC keys, header values) are held in
//! [`Secret`], which never prints, and are scrubbed from any error text.
//!
//! [`Notifier`]: warden_core::ports::Notifier
#![forbid(unsafe_code)]

pub mod channel;
pub mod config;
pub mod dispatch;
pub mod log;
pub mod retry;
pub mod secret;

pub use channel::{BuildError, ChannelKind};
pub use config::{ChannelConfig, NotifyConfig, ReceiverConfig};
pub use dispatch::{Dispatcher, DispatcherSettings, OutcomeHook, Receiver, build_receivers};
pub use log::{
    Delivery, DeliveryId, DeliveryLog, DeliveryPage, DeliveryQuery, DeliveryState, NotifiedState,
};
pub use retry::RetryPolicy;
pub use secret::Secret;
