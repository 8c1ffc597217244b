//! Black-box tests: the real application on port 0 over real HTTP, on a fresh SQLite file
//! and, when `TEST_POSTGRES_URL` is set, on a fresh PostgreSQL database.
//!
//! One file per route family, named for it (its `//!` line gives the routes); then the files
//! about what no one route owns: who may call, the client's address, the HTTP layer, the
//! caches, the process, the operator's commands, migrations, database faults, and the
//! verifier another service embeds.

mod helpers;

// The routes.
mod account;
mod account_changes;
mod account_erasure;
mod audit;
mod console;
mod health;
mod keys;
mod leak_reports;
mod signup;
mod usage;
mod verify_key;
mod webhook_deliveries;
mod webhook_notices;
mod webhooks;

// Across the routes.
mod authentication;
mod client_address;
mod credential_cache;
mod database_faults;
mod migrations;
mod operator_commands;
mod process;
mod protocol_errors;
mod quota;
mod response_headers;
mod verifier;
