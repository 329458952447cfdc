//! warden-notify against real receivers started by the tests.
mod alertmanager;
mod dispatcher;
mod email;
mod http_channels;
mod support;
