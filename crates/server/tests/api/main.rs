//! Black-box tests: the real application on port 0 over real HTTP, on a fresh SQLite file
//! and, when `TEST_POSTGRES_URL` is set, on a fresh PostgreSQL database.

mod helpers;

mod abuse;
mod account;
mod allowlists;
mod api_keys;
mod authentication;
mod cold_path;
mod database_faults;
mod health;
mod key_lifecycle;
mod migrations;
mod observability;
mod process;
mod protocol_errors;
mod revocation;
mod rights_in_flight;
mod signup;
mod usage;
mod verifier;
