//! The history store against real engines: a SQLite file in a temporary directory and a
//! private Postgres cluster this binary starts itself (`postgres.rs`). Every test runs on both.
mod audit;
mod events;
mod postgres;
mod resilience;
mod retention;
mod series;
mod support;
mod throughput;
mod totals;
mod workers;
